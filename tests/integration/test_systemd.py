"""Service control through systemd's D-Bus API, end to end: a real ZooKeeper
server run as a systemd unit by Debian's systemd, and an agent whose
component declares only `service = "<unit>"`. The restore stops and starts
the server through systemd (StopUnit/StartUnit, jobs waited for); a unit
systemd does not know is refused before anything is touched.

cairn's test machines do not boot with systemd: the manager is a private
`systemd --user` instance with its own bus (servers_systemd.py), reached
through DBUS_SYSTEM_BUS_ADDRESS, the variable sd-bus reads for the system
bus. The manager, its D-Bus API and the agent's code path are the real ones;
what differs from a host is only which bus the agent opens."""
import os

import pytest

import servers_systemd as sd
from cluster import cluster, set_state  # noqa: F401
from servers_zookeeper import JAR, MAIN, ZooKeeper, available
from test_zookeeper import backup, create, read, restore, tree

pytestmark = [pytest.mark.skipif(available() is not None, reason=available() or ""),
              pytest.mark.skipif(sd.missing() is not None, reason=sd.missing() or "")]

UNIT = "cairn-test-zookeeper.service"


@pytest.fixture
def manager(tmp_path, monkeypatch):
    d = tmp_path / "systemd"
    sd.start(d)
    # The agent (started later by the test) inherits it: its system bus is this manager's.
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", sd.bus_address(d))
    try:
        yield d
    finally:
        sd.stop(d)  # stops every unit it runs, then exits


@pytest.fixture
def zk_unit(manager, tmp_path):
    """A ZooKeeper server as the systemd unit UNIT (in the foreground, as a packaged unit runs it)."""
    z = ZooKeeper(tmp_path, "zk")
    z.write_config()
    sd.write_unit(manager, UNIT, f"""[Unit]
Description=ZooKeeper for cairn's systemd test

[Service]
ExecStart=/usr/bin/java -Xmx256m -Dzookeeper.log.dir={z.dir} -cp {JAR} {MAIN} {z.cfg}
SuccessExitStatus=143
""")
    sd.reload_units(manager)
    sd.call(manager, "StartUnit", "ss", UNIT, "replace")
    z.wait_serving()
    yield z
    sd.call(manager, "StopUnit", "ss", UNIT, "replace")


def component(z, unit):
    return (f'[[component]]\nname = "zookeeper"\ndriver = "zookeeper"\ndata_dir = "{z.data}"\n'
            f'config_file = "{z.cfg}"\nclient_address = "127.0.0.1:{z.port}"\nready_timeout_seconds = 90\n'
            f'service = {{ unit = "{unit}", timeout_seconds = 60 }}\n')


def test_restore_stops_and_starts_the_server_through_systemd(cluster, manager, zk_unit):
    c, z = cluster, zk_unit
    t = tree()
    create(z, t)
    c.add_agent("node-a", components=component(z, UNIT))
    c.enrol("node-a")
    sid = backup(c)
    pid_before = sd.main_pid(manager, UNIT)
    assert pid_before > 0

    z.cli(["deleteall /app"])
    assert read(z, t)[0] == "Node does not exist: /app"

    r = restore(c, sid)
    assert set_state(r) == "complete", r
    # systemd ran a new server process: the agent stopped and started the unit,
    # and nothing else could have (no commands are declared).
    assert sd.unit_property(manager, UNIT, "ActiveState") == "active"
    pid_after = sd.main_pid(manager, UNIT)
    assert pid_after > 0 and pid_after != pid_before
    assert not os.path.exists(f"/proc/{pid_before}")
    z.wait_serving()
    assert read(z, t) == list(t.values())
    assert [p for p in os.listdir(z.data) if p.startswith("version-2.cairn-old-")]


def test_a_unit_systemd_does_not_know_is_refused_before_anything_is_touched(cluster, manager, zk_unit):
    c, z = cluster, zk_unit
    t = tree()
    create(z, t)
    c.add_agent("node-a", components=component(z, "cairn-no-such-unit.service"))
    c.enrol("node-a")
    sid = backup(c)  # a backup does not stop the server: the unit is not needed
    z.cli(["create /after marker"])
    pid = sd.main_pid(manager, UNIT)

    rc, out, err = c.ctl("restore", sid, "--component", "zookeeper", "--wait", timeout=400)
    assert rc != 0, out
    text = out + err
    assert "cairn-no-such-unit.service' does not exist" in text, text
    # Nothing was stopped or replaced: the same server process, the data written after the backup still there.
    assert sd.main_pid(manager, UNIT) == pid
    assert z.cli(["get /after"]) == ["marker"]
    assert not [p for p in os.listdir(z.data) if ".cairn-old-" in p]
