"""A minimal CurveZMQ (RFC 26) client handshake over a raw TCP socket, in pure
Python plus `cryptography` for X25519, so a test can present a CURVE key the
controller does not know without going through libzmq."""
import os
import socket
import struct

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives import serialization

_M = 0xffffffff
_SIGMA = (0x61707865, 0x3320646e, 0x79622d32, 0x6b206574)
_Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"


def z85_decode(s):
    out = b""
    for i in range(0, len(s), 5):
        v = 0
        for ch in s[i:i + 5]:
            v = v * 85 + _Z85.index(ch)
        out += struct.pack(">I", v)
    return out


def _rotl(x, n):
    return ((x << n) | (x >> (32 - n))) & _M


def _core(key, inp, hsalsa):
    k = struct.unpack("<8I", key)
    i = struct.unpack("<4I", inp)
    x = [_SIGMA[0], *k[:4], _SIGMA[1], *i, _SIGMA[2], *k[4:], _SIGMA[3]]
    j = list(x)
    for _ in range(10):
        for a, b, c, d in ((0, 4, 8, 12), (5, 9, 13, 1), (10, 14, 2, 6), (15, 3, 7, 11),
                           (0, 1, 2, 3), (5, 6, 7, 4), (10, 11, 8, 9), (15, 12, 13, 14)):
            x[b] ^= _rotl((x[a] + x[d]) & _M, 7)
            x[c] ^= _rotl((x[b] + x[a]) & _M, 9)
            x[d] ^= _rotl((x[c] + x[b]) & _M, 13)
            x[a] ^= _rotl((x[d] + x[c]) & _M, 18)
    if hsalsa:
        return struct.pack("<8I", *(x[n] for n in (0, 5, 10, 15, 6, 7, 8, 9)))
    return struct.pack("<16I", *((x[n] + j[n]) & _M for n in range(16)))


def _stream(key, nonce24, length):
    sub = _core(key, nonce24[:16], True)
    out = b""
    ctr = 0
    while len(out) < length:
        out += _core(sub, nonce24[16:24] + struct.pack("<Q", ctr), False)
        ctr += 1
    return out[:length]


def _poly1305(msg, key):
    r = int.from_bytes(key[:16], "little") & 0x0ffffffc0ffffffc0ffffffc0fffffff
    s = int.from_bytes(key[16:], "little")
    p = (1 << 130) - 5
    acc = 0
    for i in range(0, len(msg), 16):
        acc = (acc + int.from_bytes(msg[i:i + 16] + b"\x01", "little")) * r % p
    return ((acc + s) & ((1 << 128) - 1)).to_bytes(16, "little")


def _box_key(secret, public):
    shared = secret.exchange(X25519PublicKey.from_public_bytes(public))
    return _core(shared, b"\x00" * 16, True)


def box(msg, nonce, key):
    st = _stream(key, nonce, 32 + len(msg))
    ct = bytes(a ^ b for a, b in zip(msg, st[32:]))
    return _poly1305(ct, st[:32]) + ct


def unbox(data, nonce, key):
    st = _stream(key, nonce, 32 + len(data) - 16)
    tag, ct = data[:16], data[16:]
    if _poly1305(ct, st[:32]) != tag:
        raise ValueError("bad box")
    return bytes(a ^ b for a, b in zip(ct, st[32:]))


def _pub(k):
    return k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def greeting(mechanism=b"CURVE"):
    return b"\xff" + b"\x00" * 7 + b"\x01\x7f" + b"\x03\x00" + mechanism.ljust(20, b"\x00") + b"\x00" * 32


def _command(name, data):
    body = bytes([len(name)]) + name + data
    if len(body) < 256:
        return b"\x04" + bytes([len(body)]) + body
    return b"\x06" + struct.pack(">Q", len(body)) + body


def _read_exact(s, n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            raise ConnectionError(f"peer closed after {len(b)} of {n} bytes")
        b += chunk
    return b


def _read_command(s):
    flags = _read_exact(s, 1)[0]
    size = struct.unpack(">Q", _read_exact(s, 8))[0] if flags & 0x02 else _read_exact(s, 1)[0]
    body = _read_exact(s, size)
    return body[1:1 + body[0]], body[1 + body[0]:]


def handshake(port, server_public, client_secret=None, socket_type=b"DEALER", timeout=5):
    """Runs HELLO / WELCOME / INITIATE with a long-term client key (random if not
    given). Returns (command name, data) of the server's answer to INITIATE
    (b"READY" if admitted, b"ERROR" if refused) or (None, reason) if the
    server closed the connection instead."""
    c = client_secret or X25519PrivateKey.generate()
    ct = X25519PrivateKey.generate()  # transient
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(greeting())
        peer = _read_exact(s, 64)
        if peer[12:17] != b"CURVE":
            raise AssertionError(f"server greeting is not CURVE: {peer!r}")
        k1 = _box_key(ct, server_public)
        n = os.urandom(8)
        hello = b"\x01\x00" + b"\x00" * 72 + _pub(ct) + n + box(b"\x00" * 64, b"CurveZMQHELLO---" + n, k1)
        s.sendall(_command(b"HELLO", hello))
        name, data = _read_command(s)
        if name != b"WELCOME":
            return name, data
        plain = unbox(data[16:], b"WELCOME-" + data[:16], k1)
        st_pub, cookie = plain[:32], plain[32:]
        vn = os.urandom(16)
        vouch = box(_pub(ct) + server_public, b"VOUCH---" + vn, _box_key(c, st_pub))
        meta = b"\x0bSocket-Type" + struct.pack(">I", len(socket_type)) + socket_type
        n = os.urandom(8)
        k2 = _box_key(ct, st_pub)
        init = cookie + n + box(_pub(c) + vn + vouch + meta, b"CurveZMQINITIATE" + n, k2)
        s.sendall(_command(b"INITIATE", init))
        try:
            name, data = _read_command(s)
        except (ConnectionError, socket.timeout, OSError) as e:
            return None, str(e)
        if name == b"MESSAGE" or name == b"READY" or len(name) > 16:
            return b"READY", b""
        return name, data
