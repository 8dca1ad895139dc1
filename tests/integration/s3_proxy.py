"""A fault-injecting HTTP proxy written for the object-storage tests. It sits
between cairn and a real store (SeaweedFS), forwards every request unchanged
(the Host header too, so signatures still verify), and applies rules:

  deny      answer 403 AccessDenied without forwarding (a role without the right)
  slowdown  answer 503 SlowDown without forwarding
  error500  answer 500 InternalError without forwarding
  cut_request   read part of the request body, then close the connection
  cut_response  forward, send the headers and part of the body, then close
  stall     wait `seconds` before forwarding (past the client's timeout)

With `ignore_conditional` set, a conditional PUT the store refuses (412) is
answered 200: the proxy plays a server that accepts If-None-Match and
ignores it (as some S3-compatible servers do).

A rule matches a method (or "*") and a regular expression on the path, and
applies `count` times (None: always). `agent_role()` makes an agent's
credentials as docs/configuration.md's agent policy does on AWS: every DELETE
outside locks/ is denied, and so is every write that could replace an object
(a PUT or a multipart completion without If-None-Match: *, outside locks/;
the policy's Deny on a null `s3:if-none-match`). SeaweedFS has neither a
per-prefix delete right nor that condition key: the proxy stands in for the
store's policy engine here, a substitute named as such.
"""
import http.client
import re
import socket
import socketserver
import threading
import time

from ports import free_port


class Rule:
    def __init__(self, action, method="*", path=".*", count=None, seconds=0.0):
        self.action, self.method, self.path = action, method, re.compile(path)
        self.count, self.seconds, self.hits = count, seconds, 0


class S3Proxy:
    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.rules = []
        self.lock = threading.Lock()
        self.requests = []  # (method, path, status) of every request seen
        self.ignore_conditional = False
        self.create_only = False  # agent_role(): writes that could replace an object are denied
        self.bytes_put = 0  # request bodies of PUTs the store accepted (2xx)
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                while proxy._one(self.rfile, self.connection):
                    pass

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, action, **kw):
        r = Rule(action, **kw)
        with self.lock:
            self.rules.append(r)
        return r

    def clear(self):
        with self.lock:
            self.rules = []

    def agent_role(self, create_only=True):
        self.create_only = create_only
        return self.add("deny", method="DELETE", path=r"^/[^/]+/(?!(.*/)?locks/)")

    def _replaces(self, method, target, headers):
        """A write the agent policy's condition refuses: one that may replace an object."""
        path, _, query = target.partition("?")
        if method not in ("PUT", "POST") or re.search(r"^/[^/]+/(.*/)?locks/", path):
            return False
        if method == "PUT" and "partNumber=" in query:
            return False  # a part is not an object; its completion is checked
        if method == "POST" and "uploadId=" not in query:
            return "delete" in query.split("&")  # a multi-object delete; starting an upload writes nothing
        if path.count("/") < 2 or path.endswith("/"):
            return True  # a bucket setting (versioning, policy): never the agent's
        return not any(n.lower() == "if-none-match" and v.strip() == "*" for n, v in headers)

    def count(self, method=None, path=None):
        with self.lock:
            return sum(1 for m, p, _ in self.requests if (method is None or m == method) and (path is None or re.search(path, p)))

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def _match(self, method, path):
        with self.lock:
            for r in self.rules:
                if (r.method in ("*", method)) and r.path.search(path) and (r.count is None or r.hits < r.count):
                    r.hits += 1
                    return r
        return None

    def _one(self, rfile, conn):
        line = rfile.readline(65537)
        if not line:
            return False
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers = []
        while True:
            h = rfile.readline(65537)
            if h in (b"\r\n", b"\n", b""):
                break
            name, value = h.decode("latin-1").split(":", 1)
            headers.append((name.strip(), value.strip()))
        length = int(next((v for n, v in headers if n.lower() == "content-length"), "0"))
        path = target.split("?", 1)[0]
        rule = self._match(method, path)
        if self.create_only and self._replaces(method, target, headers):
            rule = Rule("deny")
        if rule and rule.action == "cut_request":
            rfile.read(length // 2)
            self._log(method, target, 0)
            conn.shutdown(socket.SHUT_RDWR)
            return False
        body = rfile.read(length) if length else b""
        if rule and rule.action in ("deny", "slowdown", "error500"):
            code, status, reason = {"deny": ("AccessDenied", 403, "Forbidden"),
                                    "slowdown": ("SlowDown", 503, "Slow Down"),
                                    "error500": ("InternalError", 500, "Internal Server Error")}[rule.action]
            xml = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>"
                   f"<Message>injected by the test proxy</Message></Error>").encode()
            conn.sendall(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
                         f"Content-Length: {len(xml)}\r\n\r\n".encode() + (b"" if method == "HEAD" else xml))
            self._log(method, target, status)
            return True
        if rule and rule.action == "stall":
            time.sleep(rule.seconds)
        up = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=120)
        try:
            up.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for n, v in headers:
                up.putheader(n, v)
            up.endheaders(body if body else None)
            resp = up.getresponse()
            data = resp.read()
            out = f"HTTP/1.1 {resp.status} {resp.reason}\r\n"
            for n, v in resp.getheaders():
                if n.lower() in ("transfer-encoding", "connection", "content-length"):
                    continue
                out += f"{n}: {v}\r\n"
            # HEAD: the object's length as the store gave it.
            clen = resp.getheader("Content-Length") if method == "HEAD" else str(len(data))
            if clen is not None:
                out += f"Content-Length: {clen}\r\n"
            out += "\r\n"
            if self.ignore_conditional and resp.status == 412:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                self._log(method, target, 200)
                return True
            if rule and rule.action == "cut_response" and len(data) > 1:
                conn.sendall(out.encode("latin-1") + data[: len(data) // 2])
                self._log(method, target, 0)
                conn.shutdown(socket.SHUT_RDWR)
                return False
            conn.sendall(out.encode("latin-1") + (b"" if method == "HEAD" else data))
            if method == "PUT" and 200 <= resp.status < 300:
                with self.lock:
                    self.bytes_put += len(body)
            self._log(method, target, resp.status)
            return True
        finally:
            up.close()

    def _log(self, method, target, status):
        with self.lock:
            self.requests.append((method, target.split("?", 1)[0], status))
