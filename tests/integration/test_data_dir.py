"""The controller's data directory: held by one controller at a time and
private to its user (docs/configuration.md § Data directory). Real
cairn-controller processes on 127.0.0.1 (fixtures in cluster.py)."""
import os
import pathlib
import socket
import stat
import subprocess

from cluster import CONTROLLER, Cluster, cluster  # noqa: F401


def second_config(c, name):
    """A config for another controller on c's data directory, on ports it chooses."""
    cfg = c.base / name
    text = (c.base / "controller.toml").read_text()
    text = text.replace(f"127.0.0.1:{c.fleet_port}", "127.0.0.1:*")
    text = text.replace(f"127.0.0.1:{c.op_port}", "127.0.0.1:*")
    cfg.write_text(text)
    return cfg


def mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_a_second_controller_on_the_same_data_dir_refuses_naming_the_holder(cluster):
    c = cluster
    data_dir = c.base / "controller"
    p = subprocess.run([os.fspath(CONTROLLER), "--config", os.fspath(second_config(c, "second.toml"))],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=30)
    out = p.stdout.decode(errors="replace")
    assert p.returncode != 0, out
    assert (f"data directory '{data_dir}' is in use by cairn-controller pid {c.controller.pid} "
            f"on host {socket.gethostname()} since ") in out, out
    assert "stop it first" in out, out
    # The first one keeps serving, and its lock file still names it.
    assert c.controller.alive()
    c.ok("status")
    assert f"pid {c.controller.pid}\n" in (data_dir / "controller.lock").read_text()

    # Once the first has stopped, the data directory can be taken again.
    c.controller.stop()
    c.start_controller()
    c.ok("status")


def test_a_data_dir_open_to_others_is_made_private_and_the_catalog_is_0600(tmp_path):
    c = Cluster(tmp_path)
    try:
        c.init()
        data_dir = c.base / "controller"
        data_dir.mkdir(mode=0o755)
        os.chmod(data_dir, 0o775)
        # A catalog left world-readable by an older version.
        catalog = data_dir / "catalog.db"
        catalog.touch()
        os.chmod(catalog, 0o644)
        c.start_controller()
        assert mode(data_dir) == 0o700
        for name in ("catalog.db", "catalog.db-wal", "catalog.db-shm"):
            f = data_dir / name
            assert f.exists(), name
            assert mode(f) == 0o600, f"{name}: {oct(mode(f))}"
        log = pathlib.Path(c.controller.log).read_text()
        assert f"data directory '{data_dir}' was accessible to group or others" in log, log[-3000:]
    finally:
        c.stop_all()


def test_a_new_data_dir_and_catalog_are_private(cluster):
    data_dir = cluster.base / "controller"
    assert mode(data_dir) == 0o700
    for name in ("catalog.db", "catalog.db-wal", "catalog.db-shm", "controller.lock"):
        assert mode(data_dir / name) == 0o600, name
