"""Real etcd members for the integration tests (Debian's etcd-server 3.4).

Each member lives under its own directory in the test's tmp dir: data dir,
log, pid file, and the start/stop scripts the agent declares as its
`service` commands (so a restore stops and starts the very process the test
started). Ports are chosen free at run time; members are stopped by PID,
never by name.
"""
import base64
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

import pytest

from ports import free_port  # noqa: F401 (the tests import it from here too)

ETCD = shutil.which("etcd")
ETCDCTL = shutil.which("etcdctl")


def need_etcd():
    if not ETCD or not ETCDCTL:
        pytest.fail("etcd and etcdctl are needed (Debian: etcd-server, etcd-client)")


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


class Tls:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""

    def __init__(self, d):
        self.dir = pathlib.Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca, self.ca_key = self.dir / "ca.crt", self.dir / "ca.key"
        self._ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                  "-subj", "/CN=cairn-test-ca", "-keyout", self.ca_key, "-out", self.ca)
        self.server_cert, self.server_key = self._issue("server")
        self.client_cert, self.client_key = self._issue("client")

    def _ssl(self, *args):
        p = subprocess.run(["openssl", *map(os.fspath, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert p.returncode == 0, p.stdout.decode(errors="replace")

    def _issue(self, name):
        key, csr, crt, ext = (self.dir / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
        self._ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={name}",
                  "-keyout", key, "-out", csr)
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        self._ssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-CAcreateserial", "-days", "2",
                  "-extfile", ext, "-out", crt)
        os.chmod(key, 0o600)
        return crt, key


class EtcdMember:
    def __init__(self, base, name, tls=None, host="127.0.0.1", netns=None):
        """host: the address it listens on; netns: the network namespace it runs in (and
        etcdctl with it). Defaults: loopback in the root namespace."""
        need_etcd()
        self.name = name
        self.host, self.netns = host, netns
        self.prefix = ["ip", "netns", "exec", netns] if netns else []
        self.dir = pathlib.Path(base) / f"etcd-{name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.dir / "data"
        self.log = self.dir / "etcd.log"
        self.pidfile = self.dir / "etcd.pid"
        self.tls = tls
        self.scheme = "https" if tls else "http"
        self.client_port, self.peer_port = free_port(), free_port()
        self.client_url = f"{self.scheme}://{host}:{self.client_port}"
        self.peer_url = f"http://{host}:{self.peer_port}"
        self.user = None  # "root:password" once auth is on
        self.initial_cluster = f"{name}={self.peer_url}"
        self.cluster_state = "new"
        self.start_script = self.dir / "start.sh"
        self.stop_script = self.dir / "stop.sh"

    # ---- the scripts the agent runs as its service commands -------------
    def write_scripts(self):
        args = [ETCD, f"--name={self.name}", f"--data-dir={self.data_dir}",
                f"--listen-client-urls={self.client_url}", f"--advertise-client-urls={self.client_url}",
                f"--listen-peer-urls={self.peer_url}", f"--initial-advertise-peer-urls={self.peer_url}",
                f"--initial-cluster={self.initial_cluster}", f"--initial-cluster-state={self.cluster_state}",
                "--initial-cluster-token=cairn-test", "--logger=zap", "--log-outputs=stderr",
                "--max-txn-ops=1000", "--max-request-bytes=4194304", "--heartbeat-interval=100",
                "--election-timeout=1000"]
        if self.tls:
            args += [f"--cert-file={self.tls.server_cert}", f"--key-file={self.tls.server_key}",
                     f"--trusted-ca-file={self.tls.ca}", "--client-cert-auth"]
        quoted = " ".join("'" + os.fspath(a).replace("'", "'\\''") + "'" for a in args)
        # setsid: etcd outlives the script and the agent's process group.
        self.start_script.write_text(
            "#!/bin/sh\nset -e\n"
            f"setsid {quoted} >>'{self.log}' 2>&1 </dev/null &\n"
            f"echo $! >'{self.pidfile}'\n")
        self.stop_script.write_text(
            "#!/bin/sh\n"
            f"[ -s '{self.pidfile}' ] || exit 0\n"
            f"pid=$(cat '{self.pidfile}')\n"
            "kill \"$pid\" 2>/dev/null || exit 0\n"
            "i=0\n"
            "while [ -d /proc/$pid ] && ! grep -q '^[0-9]* ([^)]*) Z' /proc/$pid/stat 2>/dev/null; do\n"
            "  i=$((i+1)); [ $i -gt 300 ] && kill -9 \"$pid\"; sleep 0.1\n"
            "done\n"
            f"rm -f '{self.pidfile}'\n")

    def service_toml(self):
        return (f'service = {{ start_command = ["/bin/sh", "{self.start_script}"], '
                f'stop_command = ["/bin/sh", "{self.stop_script}"] }}')

    def component_toml(self, component="etcd", auth_file=None):
        return (f'[[component]]\nname = "{component}"\ndriver = "etcd"\n' +
                self.settings_toml(auth_file=auth_file))

    def settings_toml(self, auth_file=None, etcdctl=None):
        """The driver's settings alone (cairn-etcd-steps --settings)."""
        lines = [f'endpoint = "{self.client_url}"', f'data_dir = "{self.data_dir}"', f'member_name = "{self.name}"']
        if etcdctl:
            lines.append(f'etcdctl = "{etcdctl}"')
        lines.append(f'initial_advertise_peer_urls = ["{self.peer_url}"]')
        lines.append(self.service_toml())
        if self.tls:
            lines += [f'ca_file = "{self.tls.ca}"', f'cert_file = "{self.tls.client_cert}"',
                      f'key_file = "{self.tls.client_key}"']
        if auth_file:
            lines.append(f'auth_file = "{auth_file}"')
        return "\n".join(lines) + "\n"

    # ---- life -------------------------------------------------------------
    def pid(self):
        try:
            return int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def start(self, wait=True):
        self.write_scripts()
        subprocess.run(self.prefix + ["/bin/sh", os.fspath(self.start_script)], check=True, timeout=30)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.pid()
            if pid is None or not _alive(pid):
                pytest.fail(f"etcd {self.name} exited\n{self.tail()}")
            if self.ctl("endpoint", "health", check=False).returncode == 0:
                return
            time.sleep(0.2)
        pytest.fail(f"etcd {self.name} not healthy within {timeout} s\n{self.tail()}")

    def kill(self, sig=signal.SIGKILL):
        pid = self.pid()
        if pid and _alive(pid):
            os.kill(pid, sig)

    def stop(self):
        pid = self.pid()
        if pid is None:
            return
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)

    def tail(self, n=40):
        try:
            return "---- " + os.fspath(self.log) + "\n" + "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return f"---- {self.log}: no log"

    # ---- etcdctl ----------------------------------------------------------
    def ctl_argv(self, *args):
        argv = self.prefix + [ETCDCTL, f"--endpoints={self.client_url}", "--command-timeout=30s"]
        if self.tls:
            argv += [f"--cacert={self.tls.ca}", f"--cert={self.tls.client_cert}", f"--key={self.tls.client_key}"]
        if self.user:
            argv += [f"--user={self.user}"]
        return argv + [os.fspath(a) for a in args]

    def ctl(self, *args, input=None, check=True, timeout=120):
        env = dict(os.environ, ETCDCTL_API="3")
        p = subprocess.run(self.ctl_argv(*args), input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=env, timeout=timeout)
        if check:
            assert p.returncode == 0, (f"etcdctl {' '.join(map(str, args))} exited {p.returncode}: "
                                       f"{p.stderr.decode(errors='replace')}\n{self.tail()}")
        return p

    def put_many(self, items, batch=1000):
        """Puts {key: value} (str) in transactions of `batch` (the member allows 1000 ops)."""
        items = list(items.items())
        for i in range(0, len(items), batch):
            txn = "\n" + "".join(f"put {k} {v}\n" for k, v in items[i:i + batch]) + "\n\n"
            self.ctl("txn", input=txn.encode())

    def delete(self, key, prefix=False):
        self.ctl("del", key, *(["--prefix"] if prefix else []))

    def get_all(self):
        """Every key and value, as {str: str}."""
        p = self.ctl("get", "", "--prefix", "-w", "json")
        j = json.loads(p.stdout)
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
                for kv in j.get("kvs", [])}

    def status(self):
        p = self.ctl("endpoint", "status", "-w", "json")
        return json.loads(p.stdout)[0]["Status"]

    def revision(self):
        return self.status()["header"]["revision"]

    def enable_auth(self, password):
        self.ctl("user", "add", f"root:{password}", "--interactive=false")
        self.ctl("auth", "enable")
        self.user = f"root:{password}"


def start_cluster(base, names, hosts=None, netns=None):
    """Members that form one cluster; started together (none is ready before a quorum is).
    hosts, netns: each member's address and network namespace (lists like names)."""
    members = [EtcdMember(base, n, host=hosts[i] if hosts else "127.0.0.1", netns=netns[i] if netns else None)
               for i, n in enumerate(names)]
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    for m in members:
        m.initial_cluster = initial
        m.start(wait=False)
    for m in members:
        m.wait_ready(timeout=60)
    return members
