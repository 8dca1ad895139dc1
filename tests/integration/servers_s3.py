"""A real S3-compatible store for the object-storage tests: SeaweedFS
(`weed server -s3`), built once from the Go module proxy into
/var/cache/cairn/seaweedfs by scripts/fetch-seaweedfs.sh (Debian does not
package it). One process on loopback ports chosen here, data in the test's
tmp dir, authentication on (a request signed with a wrong secret is refused),
stopped by its PID.

Identities: "admin" may do everything (the controller's role); "reader" may
only read and list. A third role, an agent that may add but not delete, is
made by tests/integration/s3_proxy.py in front of the store (SeaweedFS's
"Write" action includes deleting).
"""
import glob
import json
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import time

from ports import free_port

CACHE = os.environ.get("CAIRN_SEAWEEDFS_CACHE", "/var/cache/cairn/seaweedfs")


def weed_binary():
    found = sorted(glob.glob(os.path.join(CACHE, "*", "weed")))
    found = [w for w in found if os.path.exists(os.path.join(os.path.dirname(w), ".complete"))]
    if not found:
        import pytest  # the benchmark (bench/repo/s3.py) uses this module without pytest
        pytest.fail(f"SeaweedFS is not built under {CACHE}: run 'bash scripts/fetch-seaweedfs.sh' "
                    "(scripts/install-deps.sh does)")
    return found[-1]


def write_credentials(path, access_key, secret_key, **settings):
    """A cairn storage credentials file (mode 0600)."""
    path = pathlib.Path(path)
    lines = [f"access_key_id={access_key}", f"secret_access_key={secret_key}"]
    lines += [f"{k}={v}" for k, v in settings.items()]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


class SeaweedFS:
    def __init__(self, base):
        self.base = pathlib.Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.data = self.base / "data"
        self.data.mkdir(exist_ok=True)
        self.log = self.base / "weed.log"
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.keys = {
            "admin": ("AKADMIN" + secrets.token_hex(6).upper(), secrets.token_urlsafe(30)),
            "reader": ("AKREADER" + secrets.token_hex(6).upper(), secrets.token_urlsafe(30)),
        }
        self.config = self.base / "s3.json"
        self.config.write_text(json.dumps({"identities": [
            {"name": "admin", "credentials": [{"accessKey": self.keys["admin"][0], "secretKey": self.keys["admin"][1]}],
             "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            {"name": "reader", "credentials": [{"accessKey": self.keys["reader"][0], "secretKey": self.keys["reader"][1]}],
             "actions": ["Read", "List"]},
        ]}))
        os.chmod(self.config, 0o600)
        self.proc = None

    def start(self, timeout=90):
        p = [free_port() for _ in range(7)]
        args = [weed_binary(), "server", f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={p[0]}", f"-master.port.grpc={p[1]}", f"-volume.port={p[2]}",
                f"-volume.port.grpc={p[3]}", f"-filer.port={p[4]}", f"-filer.port.grpc={p[5]}",
                "-s3", f"-s3.port={self.port}", f"-s3.port.grpc={p[6]}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-s3.config={self.config}", "-master.volumeSizeLimitMB=64", "-volume.max=0", "-iam=false",
                "-metricsPort=0"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"SeaweedFS exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if self._answers():
                return self
            time.sleep(0.3)
        raise AssertionError(f"SeaweedFS's S3 port did not answer in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def _answers(self):
        # An anonymous request is refused (403) once the gateway is up with auth on.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                head = s.recv(64)
                return head.startswith(b"HTTP/1.1 403") or head.startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)  # its data dies with the test: no need to wait for a tidy exit
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def url(self, bucket, prefix="", endpoint=None):
        u = f"s3:{endpoint or self.endpoint}/{bucket}"
        return u + (f"/{prefix}" if prefix else "")

    def credentials(self, path, role="admin", **settings):
        ak, sk = self.keys[role]
        return write_credentials(path, ak, sk, **settings)

    def client(self, role="admin"):
        """A botocore client of this store (the reference, for checks from outside cairn)."""
        import botocore.session
        from botocore.config import Config
        ak, sk = self.keys[role]
        s = botocore.session.get_session()
        return s.create_client("s3", endpoint_url=self.endpoint, aws_access_key_id=ak, aws_secret_access_key=sk,
                               region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
