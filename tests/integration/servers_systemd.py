"""A private systemd manager, the real one from Debian's `systemd` package,
run as a user instance (`systemd --user`) with its own D-Bus bus, for the
tests of cairn's systemd service control (agent/platform/service.cc).

cairn's test machines do not boot with systemd, so there is no system bus
and no PID 1 manager to ask. A user instance is the same manager code with
the same D-Bus API (org.freedesktop.systemd1.Manager StartUnit/StopUnit/
ReloadUnit, JobRemoved, Unit.ActiveState). cairn's agent reaches it through
the standard `DBUS_SYSTEM_BUS_ADDRESS` variable that sd-bus reads, so the
agent's code path is the production one, byte for byte.

What it takes:
- `systemd` and `dbus-daemon` (Debian packages), root (for `unshare -m`);
- systemd refuses a user instance unless /run/systemd/system exists ("the
  system has not been booted with systemd"): the manager runs in its own
  mount namespace with a tmpfs on /run/systemd holding that directory, so
  the host is left as it was;
- the manager runs in a cgroup of its own (in every hierarchy the host
  has), so managers of tests run in parallel never share a unit's cgroup
  (stopping a unit kills its cgroup); what is left there at the end is
  killed by the PIDs the cgroup lists;
- units are read only from DIR/units (no desktop units from /usr/lib),
  where this helper writes the bus (dbus.socket, dbus.service), a
  default.target, the basic.target that a service's default dependencies
  require and the exit.target that SIGTERM starts (it stops every unit);
  tests add their own units there.

Usage (prints the bus address on success; by PID, never by name):
    python3 servers_systemd.py start DIR
    python3 servers_systemd.py stop DIR
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SYSTEMD = "/lib/systemd/systemd"
DBUS_DAEMON = "/usr/bin/dbus-daemon"

BASE_UNITS = {
    "default.target": """[Unit]
Description=cairn test manager's default target
DefaultDependencies=no
Requires=dbus.socket
After=dbus.socket
""",
    "basic.target": """[Unit]
Description=cairn test manager's basic target (what a service's default dependencies require)
DefaultDependencies=no
""",
    # SIGTERM makes a user manager start exit.target: every unit is stopped
    # (services conflict with shutdown.target), then the manager exits.
    "shutdown.target": """[Unit]
DefaultDependencies=no
RefuseManualStart=yes
""",
    "exit.target": """[Unit]
DefaultDependencies=no
Requires=systemd-exit.service
After=systemd-exit.service
AllowIsolate=yes
""",
    "systemd-exit.service": """[Unit]
DefaultDependencies=no
Requires=shutdown.target
After=shutdown.target
SuccessAction=exit-force

[Service]
Slice=-.slice
""",
    "dbus.socket": """[Unit]
Description=D-Bus bus of cairn's test manager
DefaultDependencies=no
Conflicts=shutdown.target
Before=shutdown.target

[Socket]
ListenStream=%t/bus
""",
    "dbus.service": f"""[Unit]
Description=D-Bus bus of cairn's test manager
DefaultDependencies=no
Requires=dbus.socket
Conflicts=shutdown.target
Before=shutdown.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={DBUS_DAEMON} --session --address=systemd: --nofork --nopidfile --systemd-activation
""",
}


def missing():
    """Why this helper cannot run here, or None."""
    for p in (SYSTEMD, DBUS_DAEMON, "/usr/bin/unshare", "/usr/bin/busctl"):
        if not os.access(p, os.X_OK):
            return f"{p} is missing (install systemd and dbus-daemon)"
    if os.geteuid() != 0:
        return "needs root (a mount namespace for /run/systemd)"
    return None


def paths(d):
    return {"units": os.path.join(d, "units"), "runtime": os.path.join(d, "runtime-dir"),
            "pid": os.path.join(d, "manager.pid"), "log": os.path.join(d, "manager.log")}


# The cgroup hierarchies a user manager works in: the named v1 "systemd" one and the
# unified (v2) one of a hybrid host, or the v2 root of a unified host.
CGROUP_ROOTS = ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup")


def _cgroup_dirs(name):
    """Where the manager's own cgroup `name` lives, in each hierarchy this host has (a v2 root is
    used only when it is not a hybrid host's tmpfs)."""
    out = []
    for root in CGROUP_ROOTS:
        if os.path.exists(os.path.join(root, "cgroup.procs")):
            out.append(os.path.join(root, name))
    return out


def _remove_cgroups(name):
    """Kills what is left in the manager's cgroups (by the PIDs they list) and removes them."""
    for top in _cgroup_dirs(name):
        if not os.path.isdir(top):
            continue
        for _ in range(50):
            pids = set()
            for root, _, _ in os.walk(top):
                try:
                    pids |= {int(x) for x in open(os.path.join(root, "cgroup.procs")).read().split()}
                except OSError:
                    pass
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                for root, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
                    os.rmdir(root)
                break
            except OSError:
                time.sleep(0.1)


def runtime_dir(d):
    """The manager's XDG_RUNTIME_DIR (its bus and private sockets): a short path
    under /tmp, named in DIR/runtime-dir. A test's own directory can be longer than
    a Unix socket's path may be (108 bytes), and systemd then exits at once."""
    return open(paths(d)["runtime"]).read().strip()


def bus_address(d):
    return "unix:path=" + os.path.join(runtime_dir(d), "bus")


def write_unit(d, name, text):
    with open(os.path.join(paths(d)["units"], name), "w") as f:
        f.write(text)


def busctl(d, *args, timeout=10):
    return subprocess.run(["busctl", "--address=" + bus_address(d), *args], capture_output=True, text=True,
                          timeout=timeout)


def call(d, method, *args):
    """org.freedesktop.systemd1.Manager.<method>; returns busctl's output, raises on an error."""
    r = busctl(d, "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
               "org.freedesktop.systemd1.Manager", method, *args)
    if r.returncode != 0:
        raise RuntimeError(f"{method} {args}: {r.stderr.strip()}")
    return r.stdout.strip()


def reload_units(d):
    call(d, "Reload")


def unit_property(d, unit, prop, iface="org.freedesktop.systemd1.Unit"):
    path = call(d, "LoadUnit", "s", unit).split('"')[1]
    r = busctl(d, "get-property", "org.freedesktop.systemd1", path, iface, prop)
    if r.returncode != 0:
        raise RuntimeError(f"{unit} {prop}: {r.stderr.strip()}")
    out = r.stdout.strip()  # e.g. 's "active"' or 'u 1234'
    kind, _, value = out.partition(" ")
    return value.strip('"') if kind == "s" else int(value) if kind in ("u", "t", "i") else value


def main_pid(d, unit):
    return unit_property(d, unit, "MainPID", "org.freedesktop.systemd1.Service")


def _manager_answers(d):
    try:
        return busctl(d, "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                      "org.freedesktop.DBus.Peer", "Ping", timeout=5).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def start(d, timeout=30):
    why = missing()
    if why:
        raise RuntimeError("cannot start a systemd manager for the tests: " + why)
    p = paths(d)
    os.makedirs(p["units"], exist_ok=True)
    run = tempfile.mkdtemp(prefix="cairn-sd-", dir="/tmp")  # mode 0700
    with open(p["runtime"], "w") as f:
        f.write(run)
    for name, text in BASE_UNITS.items():
        write_unit(d, name, text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBUS_", "SYSTEMD_", "XDG_"))}
    env.update(XDG_RUNTIME_DIR=run, SYSTEMD_UNIT_PATH=p["units"], SYSTEMD_LOG_LEVEL="info",
               SYSTEMD_LOG_TARGET="console")
    # Its own cgroup in every hierarchy: a user manager builds its units' cgroups under the one it
    # starts in (app.slice/<unit>) and kills a unit's cgroup to stop it; two managers started
    # from the same cgroup (tests run in parallel) would stop each other's units.
    cg = os.path.basename(run)
    with open(os.path.join(d, "cgroup"), "w") as f:
        f.write(cg)
    join = "".join(f'mkdir -p {c} && echo $$ > {c}/cgroup.procs && ' for c in _cgroup_dirs(cg))
    script = (join + "mkdir -p /run/systemd && mount -t tmpfs -o mode=0755 cairn-test /run/systemd && "
              "mkdir /run/systemd/system && exec " + SYSTEMD + " --user")
    log = open(p["log"], "ab")
    # unshare execs the shell, which execs systemd: the pid below is the manager's.
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    with open(p["pid"], "w") as f:
        f.write(str(proc.pid))
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"systemd --user exited with {proc.returncode}: " + open(p["log"]).read()[-2000:])
        if os.path.exists(os.path.join(run, "bus")) and _manager_answers(d):
            return proc.pid
        time.sleep(0.1)
    stop(d)
    raise RuntimeError("systemd --user did not answer on its bus within %d s: %s" % (timeout, open(p["log"]).read()[-2000:]))


def stop(d, timeout=30):
    p = paths(d)
    try:
        pid = int(open(p["pid"]).read())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)  # the manager stops its units, then exits
    except ProcessLookupError:
        os.unlink(p["pid"])
        _cleanup(d)
        return
    end = time.time() + timeout
    while time.time() < end:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
        except ChildProcessError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    os.unlink(p["pid"])
    _cleanup(d)


def _cleanup(d):
    try:
        _remove_cgroups(open(os.path.join(d, "cgroup")).read().strip())
    except OSError:
        pass
    shutil.rmtree(runtime_dir(d), ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit(__doc__)
    if sys.argv[1] == "start":
        start(sys.argv[2])
        print(bus_address(sys.argv[2]))
    else:
        stop(sys.argv[2])
