"""Real ZooKeeper servers for the integration tests (Debian's `zookeeper` package).

Each server lives in its own directory (zoo.cfg, data/, server.log,
server.pid) with free loopback ports chosen at run time, and is stopped by
the PID it was started with, never by name. The module is also the
`start_command`/`stop_command` the agent runs for the driver's restore
(`python3 servers_zookeeper.py start|stop DIR`), so the agent and the test
start and stop a server the same way.
"""
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

from ports import free_port  # noqa: F401 (the tests import it from here too)

JAR = "/usr/share/java/zookeeper.jar"
# ZooKeeper logs through SLF4J, and Debian's zookeeper.jar names only its API: without a
# binding the server logs nothing and a failed ensemble check has no server side to read.
# slf4j-simple (libslf4j-java, which zookeeper depends on) writes to the server's stderr.
SLF4J_SIMPLE = "/usr/share/java/slf4j-simple.jar"
# Test servers and zkCli runs are small and short-lived: C1 only and the serial
# collector cost less CPU to start (about 135 servers and 180 zkCli runs per CI run).
JVM_FLAGS = ["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
CLI = "/usr/share/zookeeper/bin/zkCli.sh"
MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
HERE = pathlib.Path(__file__).resolve()


def available():
    """Why ZooKeeper cannot run here, or None."""
    if not os.path.exists(JAR) or not os.path.exists(CLI):
        return f"ZooKeeper is not installed ({JAR}, {CLI}): apt-get install zookeeper"
    if not shutil.which("java"):
        return "java is not installed"
    return None


def ask(port, word, timeout=5, host="127.0.0.1", netns=None):
    """One four-letter word; '' when nothing answers. netns: the network namespace the server is in."""
    try:
        if netns:
            from netns import socket_in
            conn = socket_in(netns)
            try:
                conn.settimeout(timeout)
                conn.connect((host, port))
            except OSError:
                conn.close()
                raise
        else:
            conn = socket.create_connection((host, port), timeout=timeout)
        with conn as s:
            s.sendall(word.encode())
            out = b""
            while True:
                b = s.recv(65536)
                if not b:
                    return out.decode(errors="replace")
                out += b
    except OSError:
        return ""


def srvr(port, host="127.0.0.1", netns=None):
    """`srvr` as a dict ('Mode', 'Zxid', 'Node count', ...); {} when not serving."""
    out = {}
    for line in ask(port, "srvr", host=host, netns=netns).splitlines():
        k, sep, v = line.partition(":")
        if sep:
            out[k.strip()] = v.strip()
    return out if "Zookeeper version" in out else {}


# ---- the service commands (run by the agent, and by the fixture) ---------

def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _our_java(pid, d):
    """The process is the server of directory d (not a recycled PID)."""
    try:
        cmd = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return os.fsencode(d / "zoo.cfg") in cmd


def service_start(d):
    d = pathlib.Path(d)
    pidf = d / "server.pid"
    if pidf.exists() and _pid_alive(int(pidf.read_text())) and _our_java(int(pidf.read_text()), d):
        return 0  # already running
    log = open(d / "server.log", "ab")
    # Its own session: the agent's command runner may signal its process
    # group; the server must outlive the start command.
    cp = JAR + (":" + SLF4J_SIMPLE if os.path.exists(SLF4J_SIMPLE) else "")
    p = subprocess.Popen(["java", "-Xmx256m", *JVM_FLAGS, "-Dzookeeper.log.dir=" + os.fspath(d),
                          "-Dorg.slf4j.simpleLogger.showDateTime=true",
                          "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS", "-cp", cp, MAIN,
                          os.fspath(d / "zoo.cfg")],
                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    pidf.write_text(str(p.pid))
    return 0


def service_stop(d, timeout=30):
    d = pathlib.Path(d)
    pidf = d / "server.pid"
    if not pidf.exists():
        return 0
    pid = int(pidf.read_text())
    if not _pid_alive(pid) or not _our_java(pid, d):
        pidf.unlink()
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and _our_java(pid, d):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
        time.sleep(0.1)
        try:  # reap it when it is our child (the fixture's own start)
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    pidf.unlink()
    return 0


class ZooKeeper:
    """One server: standalone, or member `myid` of an ensemble (see ensemble())."""

    def __init__(self, base, name, myid=None, separate_logs=False, host="127.0.0.1", netns=None):
        """host: the address it serves clients and peers on; netns: the network namespace it
        runs in (and zkCli with it). Defaults: loopback in the root namespace."""
        self.host, self.netns = host, netns
        self.prefix = ["ip", "netns", "exec", netns] if netns else []  # ip execs: the PID is the command's
        self.dir = pathlib.Path(base) / name
        self.data = self.dir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.logs = self.dir / "txlogs" if separate_logs else None
        if self.logs:
            self.logs.mkdir(parents=True, exist_ok=True)
        self.cfg = self.dir / "zoo.cfg"
        self.port = free_port()
        self.myid = myid
        self.peer_ports = (free_port(), free_port())
        self.servers = None
        if myid is not None:
            (self.data / "myid").write_text(f"{myid}\n")

    def write_config(self, extra="", whitelist="srvr,mntr,ruok,stat"):
        lines = [
            "tickTime=500", "initLimit=20", "syncLimit=10",
            f"dataDir={self.data}", f"clientPort={self.port}", f"clientPortAddress={self.host}",
            *([f"dataLogDir={self.logs}"] if self.logs else []),
            "admin.enableServer=false", f"4lw.commands.whitelist={whitelist}",
            "snapCount=50",
        ]
        if self.servers:
            # {myid: (peer port, election port)}, or (host, peer port, election port)
            lines += [f"server.{i}={(v[0] if len(v) == 3 else '127.0.0.1')}:{v[-2]}:{v[-1]}"
                      for i, v in sorted(self.servers.items())]
        self.cfg.write_text("\n".join(lines) + "\n" + extra)

    def start(self):
        # Through the same command the agent runs: the server is never this
        # process's child, whoever stops it.
        subprocess.run(self.prefix + [sys.executable, os.fspath(HERE), "start", os.fspath(self.dir)], check=True,
                       timeout=60)
        return self

    def stop(self):
        subprocess.run([sys.executable, os.fspath(HERE), "stop", os.fspath(self.dir)], check=True, timeout=120)

    def pid(self):
        f = self.dir / "server.pid"
        return int(f.read_text()) if f.exists() else None

    def srvr(self):
        return srvr(self.port, host=self.host, netns=self.netns)

    def wait_serving(self, timeout=60, modes=("standalone", "leader", "follower")):
        deadline = time.monotonic() + timeout
        s = {}
        while time.monotonic() < deadline:
            s = self.srvr()
            if s.get("Mode") in modes:
                return s
            time.sleep(0.2)
        raise AssertionError(f"ZooKeeper {self.dir.name} is not serving after {timeout} s (srvr: {s})\n"
                             + self.log_tail())

    def log_tail(self, n=30):
        try:
            return "\n".join((self.dir / "server.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no server log)"

    def cli(self, commands, timeout=120):
        """Runs zkCli.sh commands (one per line) in one session; the output lines that are not chatter."""
        p = subprocess.run(self.prefix + [CLI, "-server", f"{self.host}:{self.port}"], input="\n".join(commands) + "\nquit\n",
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                           env={**os.environ, "CLIENT_JVMFLAGS": " ".join(JVM_FLAGS)})
        noise = ("Connecting to", "Welcome to ZooKeeper", "JLine support", "WATCHER::", "WatchedEvent", "SLF4J:",
                 "Created /", "Sync is OK")
        return [ln for ln in p.stdout.splitlines() if ln.strip() and not ln.startswith(noise)]

    def component(self, name="zookeeper"):
        """The agent's [[component]] table for this server."""
        py = sys.executable
        return (f'[[component]]\nname = "{name}"\ndriver = "zookeeper"\ndata_dir = "{self.data}"\n'
                f'config_file = "{self.cfg}"\nclient_address = "{self.host}:{self.port}"\n'
                + (f'data_log_dir = "{self.logs}"\n' if self.logs else "") +
                f'ready_timeout_seconds = 90\n'
                f'service = {{ start_command = ["{py}", "{HERE}", "start", "{self.dir}"], '
                f'stop_command = ["{py}", "{HERE}", "stop", "{self.dir}"], timeout_seconds = 60 }}\n')


def ensemble(base, n=3, hosts=None, netns=None):
    """n members that know each other, configured, not started. hosts, netns: each member's
    address and network namespace (lists of n; default loopback in the root namespace)."""
    members = [ZooKeeper(base, f"zk{i}", myid=i, host=hosts[i - 1] if hosts else "127.0.0.1",
                         netns=netns[i - 1] if netns else None) for i in range(1, n + 1)]
    servers = {m.myid: (m.host, *m.peer_ports) for m in members}
    for m in members:
        m.servers = servers
        m.write_config()
    return members


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit(f"usage: {sys.argv[0]} start|stop DIR")
    sys.exit(service_start(sys.argv[2]) if sys.argv[1] == "start" else service_stop(sys.argv[2]))
