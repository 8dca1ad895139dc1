"""A real control plane on loopback for the integration tests: one cairn-controller
and any number of cairn-agent processes, driven with `cairnctl`.

Everything lives in a test's tmp_path; ports are chosen at run time; every
process is stopped by its PID (never by name) when the fixture is torn down.
Waits are bounded and their failures carry the tails of the daemons' logs.
"""
import json
import os
import re
import pathlib
import signal
import sqlite3
import subprocess
import time

import pytest

from ports import free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("CAIRN_BUILD_DIR") or ROOT / "build")
CTL = BUILD / "cairnctl" / "cairnctl"
CONTROLLER = BUILD / "controller" / "cairn-controller"
AGENT = BUILD / "agent" / "cairn-agent"

HEARTBEAT_MS = 200
LIVENESS = 5  # controller and agents: lost after LIVENESS * HEARTBEAT_MS = 1 s of silence



def write_random_file(path, size, chunk=8 << 20):
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


def tail(path, n=30):
    try:
        lines = pathlib.Path(path).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"---- {path}: no log\n"
    return f"---- last {n} lines of {path}\n" + "\n".join(lines[-n:]) + "\n"


class Proc:
    """One daemon process with its log file."""

    def __init__(self, name, argv, log, env=None):
        self.name, self.argv, self.log = name, [os.fspath(a) for a in argv], pathlib.Path(log)
        self.env = env  # variables added to the environment, or None
        self.p = None

    def start(self):
        f = open(self.log, "ab")
        f.write(f"==== start {' '.join(self.argv)}\n".encode())
        f.flush()
        env = dict(os.environ, **self.env) if self.env else None
        self.p = subprocess.Popen(self.argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        f.close()
        return self

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            os.kill(self.p.pid, sig)
            self.p.wait(timeout=10)

    def stop(self, timeout=10):
        if not self.alive():
            return
        os.kill(self.p.pid, signal.SIGTERM)
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.p.pid, signal.SIGKILL)
            self.p.wait(timeout=10)


class Cluster:
    def __init__(self, base, liveness=LIVENESS, netns=None, host="127.0.0.1"):
        """netns: a network namespace the controller runs in (and cairnctl, which reaches
        its operator socket on that namespace's loopback); host: the address its fleet
        socket listens on, which the agents connect to. Defaults: the root namespace, loopback."""
        self.base = pathlib.Path(base)
        self.liveness = liveness
        self.netns, self.host = netns, host
        self.prefix = ["ip", "netns", "exec", netns] if netns else []  # ip execs: the PID is the command's
        self.keys = self.base / "keys"
        # The controller's ports come from ports.free_port(): below the
        # kernel's ephemeral range and locked for this process, so nothing else
        # is handed them while the controller is down between restarts (which
        # reuse them: agents are configured with them). Ports it got from
        # bind(0) were in that range, and CI once saw a restart after a 25 s
        # outage fail with "Address already in use".
        self.fleet_port = self.op_port = None
        self.endpoint = None
        self.controller_cfg = self.base / "controller.toml"
        self.controller = None
        self.agents = {}  # name -> Proc
        self.agent_dirs = {}  # name -> dict of paths
        self.repo = self.base / "repo"
        self.repo_pass = self.base / "repo.pass"
        # A repository in an object store (test_object_storage.py): repo is its URL,
        # repo_credentials the controller's credentials file; agents may reach it
        # through another URL (agent_repo: a proxy) with their own credentials.
        self.repo_credentials = None
        self.agent_repo = None
        self.agent_repo_credentials = None
        self.agent_repo_extra = ""  # more keys of the agents' [[repository]] (accept_unprotected_store = true)

    def repo_args(self):
        """--repo/--password-file (and --storage-credentials) of the test repository, for `cairnctl repo`."""
        a = ["--repo", self.repo, "--password-file", self.repo_pass]
        return a + (["--storage-credentials", self.repo_credentials] if self.repo_credentials else [])

    def _repository_toml(self, agent=False):
        path = (self.agent_repo or self.repo) if agent else self.repo
        creds = (self.agent_repo_credentials or self.repo_credentials) if agent else self.repo_credentials
        t = f'[[repository]]\nname = "main"\npath = "{path}"\npassword_file = "{self.repo_pass}"\n'
        t += f'credentials_file = "{creds}"\n' if creds else ""
        return t + (self.agent_repo_extra if agent else "")

    # ---- logs and waits -------------------------------------------------
    def logs(self):
        out = ""
        if self.controller:
            out += tail(self.controller.log)
        for a in self.agents.values():
            out += tail(a.log)
        return out

    def wait_for(self, what, pred, timeout=20, interval=0.2):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = pred()
            if last:
                return last
            time.sleep(interval)
        pytest.fail(f"{what} did not happen within {timeout} s (last check: {last!r})\n{self.logs()}")

    # ---- cairnctl ---------------------------------------------------------
    def env(self):
        e = dict(os.environ)
        e["CAIRN_OPERATOR_KEY_DIR"] = os.fspath(self.keys)
        if self.endpoint:  # known once the controller has started (it chooses its ports)
            e["CAIRN_CONTROLLER"] = self.endpoint
        else:
            e.pop("CAIRN_CONTROLLER", None)
        e.pop("CAIRN_REPOSITORY", None)
        e.pop("CAIRN_PASSWORD_FILE", None)
        return e

    def ctl(self, *args, timeout=120):
        """Runs cairnctl; returns (rc, stdout, stderr)."""
        argv = self.prefix + [os.fspath(CTL)] + [os.fspath(a) for a in args]
        try:
            p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env(),
                               timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"cairnctl {' '.join(map(str, args))} did not finish within {timeout} s\n"
                        f"stdout: {(e.stdout or b'').decode(errors='replace')[-2000:]}\n{self.logs()}")
        return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")

    def ctl_popen(self, *args):
        argv = self.prefix + [os.fspath(CTL)] + [os.fspath(a) for a in args]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env(),
                                stdin=subprocess.DEVNULL)

    def ok(self, *args, **kw):
        rc, out, err = self.ctl(*args, **kw)
        assert rc == 0, (f"cairnctl {' '.join(map(str, args))} exited {rc}\nstdout: {out[-3000:]}\n"
                         f"stderr: {err[-3000:]}\n{self.logs()}")
        return out

    def json(self, *args, **kw):
        out = self.ok(*args, "--json", **kw)
        return json.loads(out)

    def wait_signed(self, set_id, repository="main", timeout=60):
        """Until the controller wrote the set's signed record to the
        repository (controller/set_record.h; what a catalog rebuild trusts)."""
        return self.wait_for(f"set {set_id}'s signed record in '{repository}'",
                             lambda: repository in self.json("backup", "show", set_id).get("signed_record_in", []),
                             timeout=timeout)

    def signing_pub(self):
        """The controller's signing key file (controller-signing.pub), for --trusted-key."""
        return self.keys / "controller-signing.pub"

    # ---- set-up ---------------------------------------------------------
    def init(self):
        self.base.mkdir(parents=True, exist_ok=True)
        self.ok("keys", "init", "--dir", self.keys)
        self.repo_pass.write_text("correct horse battery staple\n")
        os.chmod(self.repo_pass, 0o600)
        self.ok("repo", "init", *self.repo_args())
        self.fleet_port, self.op_port = free_port(), free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.op_port}"
        cfg = self.controller_cfg
        cfg.write_text(f"""[controller]
id = "it-controller"
data_dir = "{self.base / 'controller'}"
key_dir = "{self.keys}"
log_level = "debug"
[fleet]
listen = "tcp://{self.host}:{self.fleet_port}"
heartbeat_interval_ms = {HEARTBEAT_MS}
liveness = {self.liveness}
[operator]
listen = "{self.endpoint}"
authorized_keys = {{ it = "{self.keys / 'operator-curve.pub'}" }}
[http]
listen = "127.0.0.1:0"
""")
        self.controller = Proc("controller", self.prefix + [CONTROLLER, "--config", cfg], self.base / "controller.log")
        return self

    def start_controller(self):
        self.controller.start()
        self.wait_for("the controller answering 'cairnctl status'", lambda: self._status_ok(), timeout=20)

    def declare_repository(self, cluster_name=None):
        """Restarts the controller declaring the agents' repository as [[repository]] "main"
        (what export, import and retention read), and `[controller] cluster` when given."""
        self.controller.stop()
        cfg = self.controller_cfg.read_text()
        if cluster_name:
            cfg = cfg.replace('id = "it-controller"', f'id = "it-controller"\ncluster = "{cluster_name}"', 1)
        self.controller_cfg.write_text(cfg + "\n" + self._repository_toml())
        self.start_controller()

    def http_url(self):
        """The controller's /metrics and status page base URL, from the newest line its log gives it in."""
        found = re.findall(r"http: /metrics and the status page on (http://\S+/)", self.controller.log.read_text(errors="replace"))
        assert found, f"the controller logged no HTTP listener\n{self.logs()}"
        return found[-1]

    def _status_ok(self):
        if not self.controller.alive():
            pytest.fail(f"the controller exited with {self.controller.p.returncode}\n{self.logs()}")
        return self.ctl("status", "--timeout", "2", timeout=30)[0] == 0

    def add_agent(self, name, files=None, components="", netns=None, env=None):
        """Configures an agent with one `files` component 'data' over base/<name>/data,
        plus `components`: more TOML (`[[component]]` tables of other drivers).
        netns: the network namespace it runs in (it reaches the controller at `host`);
        env: variables added to its environment."""
        d = self.base / name
        data = d / "data"
        data.mkdir(parents=True, exist_ok=True)
        if files:
            for rel, content in files.items():
                p = data / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(content)
        # Each agent has its own copy of the controller's signing key, as on a
        # real node (a rotation rewrites the controller's file, not this one).
        signing_pub = d / "controller-signing.pub"
        signing_pub.write_text((self.keys / "controller-signing.pub").read_text())
        cfg = d / "agent.toml"
        cfg.write_text(f"""name = "{name}"
state_dir = "{d / 'state'}"
log_level = "debug"
[controller]
endpoint = "tcp://{self.host}:{self.fleet_port}"
public_key = "{(self.keys / 'controller-curve.pub').read_text().strip()}"
signing_keys_file = "{signing_pub}"
heartbeat_interval_ms = {HEARTBEAT_MS}
liveness = {self.liveness}
{self._repository_toml(agent=True)}[[component]]
name = "data"
driver = "files"
paths = ["{data}"]
{components}""")
        p = subprocess.run([os.fspath(AGENT), "--config", os.fspath(cfg), "--print-public-key"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        assert p.returncode == 0, f"--print-public-key exited {p.returncode}: {p.stderr.decode(errors='replace')}"
        key = p.stdout.decode().strip()
        prefix = ["ip", "netns", "exec", netns] if netns else []
        self.agents[name] = Proc(name, prefix + [AGENT, "--config", cfg], d / "agent.log", env=env)
        self.agent_dirs[name] = {"dir": d, "data": data, "key": key, "config": cfg}
        return self.agents[name]

    # ---- agents ---------------------------------------------------------
    def agent_list(self):
        return self.json("agent", "list")

    def agents_of(self):
        j = self.agent_list()
        return j.get("agents", []) if isinstance(j, dict) else j

    def find_agent(self, name=None, key=None):
        for a in self.agents_of():
            if name is not None and a.get("name") == name:
                return a
            if key is not None and a.get("curve_public_key") == key:
                return a
        return None

    def enrol(self, name):
        """Starts agent `name`, waits until it is pending, approves it, waits until connected."""
        proc = self.agents[name]
        if not proc.alive():
            proc.start()
        key = self.agent_dirs[name]["key"]
        pend = self.wait_for(f"agent {name} appearing as pending",
                             lambda: self._pending(key), timeout=20)
        self.ok("agent", "approve", pend["agent_id"])
        self.wait_for(f"agent {name} connected and approved", lambda: self.connected(name), timeout=30)

    def _pending(self, key):
        if not self.agents_alive():
            return None
        a = self.find_agent(key=key)
        return a if a and agent_state(a) == "pending" else None

    def agents_alive(self):
        for n, p in self.agents.items():
            if p.p is not None and not p.alive() and not getattr(p, "expect_dead", False):
                pytest.fail(f"agent {n} exited with {p.p.returncode}\n{self.logs()}")
        return True

    def connected(self, name):
        a = self.find_agent(name=name)
        return a if a and agent_state(a) == "approved" and a.get("connected") else None

    def stop_all(self):
        """SIGTERM to every daemon at once, then waits for each (SIGKILL after 10 s)."""
        procs = [p for p in list(self.agents.values()) + ([self.controller] if self.controller else []) if p.alive()]
        for p in procs:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except OSError:
                pass
        for p in procs:
            try:
                p.p.wait(timeout=10)
            except Exception:  # teardown must reach every process
                try:
                    p.kill()
                except Exception:
                    pass


def backup_set_id(out):
    """The id in cairnctl's 'backup set ID created ...' line."""
    for line in out.splitlines():
        w = line.split()
        if len(w) >= 4 and w[:2] == ["backup", "set"] and w[3] == "created":
            return w[2]
    raise AssertionError(f"no 'backup set ID created' line in: {out[-2000:]}")


def catalog(c):
    """A connection to the running controller's catalog (SQLite, WAL: safe beside the daemon)."""
    con = sqlite3.connect(c.base / "controller" / "catalog.db", timeout=30)
    con.execute("PRAGMA busy_timeout = 30000")
    return con


def agent_state(a):
    s = str(a.get("state", "")).lower()
    return s.replace("agent_state_", "")


def lower_enum(v, prefix):
    s = str(v).lower()
    return s[len(prefix):] if s.startswith(prefix) else s


def task_state(t):
    return lower_enum(t.get("state", ""), "task_state_")


def set_state(s):
    return lower_enum(s.get("state", ""), "set_state_")


def kind(t):
    """A task's kind: backup, restore, ..."""
    return lower_enum(t.get("kind", ""), "task_kind_")


def killed_mid_restore(c, agent_name, args, timeout=600, while_dead=None, safety=False):
    """A restore (cairnctl restore ARGS --wait, with --skip-safety-backup unless
    safety) whose agent a
    failpoint kills mid-way: it must not read complete; the agent is started
    again and the text of the task's reasons returned once the agent has said
    what it did at its start (docs/protocol.md § An agent stopped during an
    in-place restore). while_dead() runs before the restart (what the kill left);
    the record the agent keeps must be there then, and gone once it has spoken."""
    rc, out, err = c.ctl("restore", *args, *([] if safety else ["--skip-safety-backup"]), "--wait", timeout=timeout)
    assert rc != 0, f"a restore whose agent was killed exited 0\n{out}\n{err}"
    rid = restore_id(out)
    agent = c.agents[agent_name]
    agent.p.wait(timeout=30)  # the failpoint killed it
    records = c.agent_dirs[agent_name]["dir"] / "state" / "restores"
    assert list(records.glob("*.json")), "the killed agent left no record of its restore"
    if while_dead:
        while_dead()
    agent.start()

    def told():
        t = next(x for x in c.json("restore", "show", rid)["tasks"] if kind(x) == "restore")  # not its safety backup
        d = " ".join(x.get("detail", "") for x in t.get("reasons", []))
        return d if "put the previous data back" in d else None
    detail = c.wait_for(f"{agent_name}'s account of the interrupted restore {rid}", told, timeout=180)
    assert "agent_lost" in json.dumps(c.json("restore", "show", rid)).lower(), detail
    assert not list(records.glob("*.json")), "its record was left"
    return detail


def restore_id(out):
    """The id in cairnctl's 'restore ID created ...' line."""
    for line in out.splitlines():
        w = line.split()
        if len(w) >= 3 and w[0] == "restore" and w[2] == "created":
            return w[1]
    raise AssertionError(f"no 'restore ID created' line in: {out[-2000:]}")


@pytest.fixture
def cluster(tmp_path, request):
    # @pytest.mark.liveness(N): N heartbeats of silence before a side is lost,
    # for a test whose servers load the machine enough to starve the daemons
    # for a second (three JVMs starting at once on two cores).
    for b in (CTL, CONTROLLER, AGENT):
        if not b.exists():
            pytest.fail(f"binary not found: {b}; build it or set CAIRN_BUILD_DIR")
    mark = request.node.get_closest_marker("liveness")
    c = Cluster(tmp_path, liveness=mark.args[0] if mark else LIVENESS)
    try:
        c.init()
        c.start_controller()
        yield c
    finally:
        c.stop_all()
