"""A real haproxy (Debian's /usr/sbin/haproxy) for the integration tests.

Started in daemon mode with a pid file, on loopback ports chosen at run time,
its stats socket (level admin) in a short private directory (a Unix socket
path is limited to 107 bytes; pytest's tmp paths can be longer). Reloads are
`haproxy -f ... -p PIDFILE -D -sf OLDPID`, as the agent's declared
reload_command runs them (reload.sh; start.sh and stop.sh beside it). Every process is stopped by its PID.
"""
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from ports import free_port  # noqa: F401 (the tests import it from here too)

HAPROXY = "/usr/sbin/haproxy"


def make_certificate(path, cn):
    """A self-signed certificate and its key in one PEM file (what haproxy's 'crt' loads)."""
    path = pathlib.Path(path)
    key, crt = path.with_suffix(".key.tmp"), path.with_suffix(".crt.tmp")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={cn}", "-keyout", key, "-out", crt],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    path.write_bytes(crt.read_bytes() + key.read_bytes())
    key.unlink()
    crt.unlink()
    return path


class Haproxy:
    def __init__(self, base, configs):
        """configs: the files/directories given with -f, in order."""
        self.base = pathlib.Path(base)
        self.configs = [pathlib.Path(c) for c in configs]
        self.run_dir = pathlib.Path(tempfile.mkdtemp(prefix="hap", dir="/tmp"))
        self.socket = self.run_dir / "admin.sock"
        self.pidfile = self.run_dir / "haproxy.pid"
        self.log = self.base / "haproxy.log"
        self.pids = set()
        self.reload_script = self.base / "reload.sh"
        args = " ".join(f"-f '{c}'" for c in self.configs)
        self.reload_script.write_text(
            "#!/bin/sh\n"
            "# The agent's declared reload_command: a new process takes over, the old one finishes.\n"
            f"exec {HAPROXY} {args} -p '{self.pidfile}' -D -sf $(cat '{self.pidfile}') >>'{self.log}' 2>&1\n")
        os.chmod(self.reload_script, 0o755)
        # start_command and stop_command, which the agent's service table needs beside it.
        self.start_script = self.base / "start.sh"
        self.start_script.write_text(f"#!/bin/sh\nexec {HAPROXY} {args} -p '{self.pidfile}' -D >>'{self.log}' 2>&1\n")
        os.chmod(self.start_script, 0o755)
        self.stop_script = self.base / "stop.sh"
        self.stop_script.write_text(f"#!/bin/sh\nkill $(cat '{self.pidfile}')\n")
        os.chmod(self.stop_script, 0o755)

    def argv(self):
        out = [HAPROXY]
        for c in self.configs:
            out += ["-f", os.fspath(c)]
        return out + ["-p", os.fspath(self.pidfile), "-D"]

    def start(self):
        with open(self.log, "ab") as f:
            p = subprocess.run(self.argv(), stdout=f, stderr=subprocess.STDOUT, timeout=60)
        assert p.returncode == 0, f"haproxy did not start ({p.returncode}):\n{self.log.read_text(errors='replace')[-3000:]}"
        self.wait_ready()
        return self

    def pid(self):
        try:
            return int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def wait_ready(self, old_pid=None, timeout=20):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            pid = self.pid()
            if pid:
                self.pids.add(pid)
            try:
                info = self.cli("show info")
                if pid and f"Pid: {pid}\n" in info and pid != old_pid:
                    return pid
                last = info[:200]
            except OSError as e:
                last = e
            time.sleep(0.1)
        raise AssertionError(f"haproxy not answering on {self.socket} within {timeout} s ({last!r})\n"
                             f"{self.log.read_text(errors='replace')[-3000:] if self.log.exists() else ''}")

    def reload(self):
        old = self.pid()
        p = subprocess.run([os.fspath(self.reload_script)], timeout=60)
        assert p.returncode == 0, f"reload failed:\n{self.log.read_text(errors='replace')[-3000:]}"
        return self.wait_ready(old_pid=old)

    def cli(self, command, timeout=10):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(os.fspath(self.socket))
            s.sendall(command.encode() + b"\n")
            out = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                out += b
        return out.decode(errors="replace")

    def ok(self, command):
        reply = self.cli(command)
        assert reply.strip() == "", f"haproxy refused '{command}': {reply}"

    def servers(self):
        """{(backend, server): (srv_admin_state, srv_uweight)} from 'show servers state'."""
        lines = self.cli("show servers state").splitlines()
        assert lines and lines[0].strip() == "1", lines[:3]
        cols = None
        out = {}
        for line in lines[1:]:
            w = line.split()
            if not w:
                continue
            if w[0] == "#":
                cols = {name: i for i, name in enumerate(w[1:])}
                continue
            out[(w[cols["be_name"]], w[cols["srv_name"]])] = (int(w[cols["srv_admin_state"]]), int(w[cols["srv_uweight"]]))
        return out

    def table(self, name):
        """{key: {data: value}} of a stick table."""
        out = {}
        for line in self.cli(f"show table {name}").splitlines():
            if not line.startswith("0x"):
                continue
            fields = dict(w.split("=", 1) for w in line.split(": ", 1)[1].split() if "=" in w)
            key = fields.pop("key")
            for k in ("use", "exp", "shard"):
                fields.pop(k, None)
            out[key] = fields
        return out

    def map(self, file):
        out = {}
        for line in self.cli(f"show map {file}").splitlines():
            if line.startswith("0x"):
                _, k, v = line.split(" ", 2)
                out[k] = v
        return out

    @staticmethod
    def _is_haproxy(pid):
        try:
            return os.readlink(f"/proc/{pid}/exe") == HAPROXY
        except OSError:
            return False

    def stop(self):
        """SIGTERM to every haproxy process this fixture saw (by PID, checked to still be haproxy)."""
        self.pids |= {self.pid()} - {None}
        self.pids = {p for p in self.pids if self._is_haproxy(p)}
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 10
        for pid in self.pids:
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.run_dir, ignore_errors=True)
