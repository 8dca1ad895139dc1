"""A tiny HTTP server for http_test.cc, on TCP (port 0) and on a Unix socket.

Usage: http_server.py PORT_FILE UNIX_SOCKET_PATH. Writes the TCP port and a
newline to PORT_FILE once both listen.
"""
import http.server
import os
import socketserver
import sys
import threading
import time


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, ctype="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/hello":
            self.reply(200, b"hi", "text/plain; charset=utf-8")
        elif self.path == "/header":
            self.reply(200, (self.headers.get("X-Cairn") or "").encode())
        elif self.path == "/big":
            self.reply(200, b"z" * (2 << 20))
        elif self.path == "/slow":
            time.sleep(5)
            self.reply(200, b"late")
        else:
            self.reply(404, b"no such page")

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        self.reply(201, b"POST " + self.path.encode() + b" " + body, "application/json")

    def do_DELETE(self):
        self.reply(200, b"DELETE " + self.path.encode())


class Quiet:
    def handle_error(self, request, client_address):
        pass  # a client that gave up (timeout, max_body) is what the test wants


class Tcp(Quiet, http.server.ThreadingHTTPServer):
    daemon_threads = True


class Unix(Quiet, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        conn, _ = self.socket.accept()
        return conn, ("unix", 0)


tcp = Tcp(("127.0.0.1", 0), Handler)
unix = Unix(sys.argv[2], Handler)
threading.Thread(target=unix.serve_forever, daemon=True).start()
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write("%d\n" % tcp.server_address[1])
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
tcp.serve_forever()
