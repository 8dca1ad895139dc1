"""The haproxy driver against a real haproxy 2.6, through the controller
(issue 10): the configuration (two -f entries, one a directory), a map and a
certificate, servers' weights and maintenance set over the stats socket, a
stick table entry and a runtime map entry -> backup -> files changed and
state reset -> restore -> files equal byte for byte and the runtime state as
it was. A restored configuration that `haproxy -c` refuses changes nothing."""
import json
import os

import pytest

from cluster import backup_set_id, cluster, killed_mid_restore, lower_enum, restore_id  # noqa: F401
from servers_haproxy import Haproxy, free_port, make_certificate


def write_config(etc, http_port, https_port, sock, extra_backend_weight=10):
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "conf.d").mkdir(exist_ok=True)
    (etc / "hosts.map").write_text("# host -> backend\nwww.example.com app\napi.example.com app\n")
    (etc / "haproxy.cfg").write_text(f"""# main configuration, read first
global
    crt-base {etc}/certs
    stats socket {sock} mode 600 level admin
    log stdout local0 notice

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend web
    bind 127.0.0.1:{http_port}
    bind 127.0.0.1:{https_port} ssl crt site.pem
    http-request set-var(txn.be) req.hdr(host),lower,map_str({etc}/hosts.map,app)
    http-request track-sc0 src table app
    default_backend app
""")
    (etc / "conf.d" / "10-app.cfg").write_text(f"""backend app
    stick-table type ip size 1k expire 1h store gpc0,conn_cnt
    server s1 127.0.0.1:{free_port()} weight 10
    server s2 127.0.0.1:{free_port()} weight 20
    server s3 127.0.0.1:{free_port()} weight {extra_backend_weight}
""")


def tree(d):
    """Every file below d: relative path -> bytes."""
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, d)] = open(p, "rb").read()
    return out


def component_toml(h, etc, staging):
    return f"""[[component]]
name = "lb"
driver = "haproxy"
config = ["{etc / 'haproxy.cfg'}", "{etc / 'conf.d'}"]
stats_socket = "{h.socket}"
service = {{ reload_command = ["{h.reload_script}"], start_command = ["{h.start_script}"], stop_command = ["{h.stop_script}"] }}
staging_dir = "{staging}"
"""


@pytest.fixture
def lb(cluster, tmp_path):
    etc = tmp_path / "haproxy" / "etc"
    (etc / "certs").mkdir(parents=True)
    h = Haproxy(tmp_path / "haproxy", [etc / "haproxy.cfg", etc / "conf.d"])
    make_certificate(etc / "certs" / "site.pem", "site.example")
    write_config(etc, free_port(), free_port(), h.socket)
    staging = tmp_path / "staging"
    staging.mkdir()
    h.start()
    c = cluster
    # Fault injection (agent/failpoint.h): a test writes a failpoint into this file.
    c.add_agent("node-a", {"a.txt": b"alpha"}, components=component_toml(h, etc, staging),
                env={"CAIRN_FAILPOINTS_FILE": os.fspath(tmp_path / "failpoints")})
    c.enrol("node-a")
    try:
        yield c, h, etc, staging
    finally:
        h.stop()


def backup(c):
    rc, out, err = c.ctl("backup", "create", "--component", "lb", "--wait")
    assert rc == 0, f"backup create exited {rc}\n{out}\n{err}\n{c.logs()}"
    sid = backup_set_id(out)
    s = c.json("backup", "show", sid)
    assert lower_enum(s.get("state", ""), "set_state_") == "complete", json.dumps(s, indent=1)
    return sid, s


def test_haproxy_roundtrip_files_and_runtime_state(lb, tmp_path):
    c, h, etc, staging = lb
    # Runtime state an operator set over the socket: nowhere in the files.
    h.ok("set server app/s1 state maint")
    h.ok("set server app/s2 weight 7")
    h.ok("set server app/s3 state drain")
    h.ok("set table app key 10.1.2.3 data.gpc0 42")
    h.ok(f"add map {etc}/hosts.map shop.example.com app")
    servers_before = h.servers()
    assert servers_before[("app", "s1")][0] & 1 and servers_before[("app", "s2")][1] == 7, servers_before
    files_before = tree(etc)
    map_before = h.map(etc / "hosts.map")
    assert map_before["shop.example.com"] == "app"

    sid, shown = backup(c)
    assert os.listdir(staging) == [], f"the runtime staging directory was left behind: {os.listdir(staging)}"
    # The snapshot records what haproxy ran and the servers' state, and
    # 'backup show' says so.
    snap_id = shown["tasks"][0]["snapshot_id"]
    snaps = json.loads(c.ok("repo", "snapshots", "--json", "--repo", c.repo, "--password-file", c.repo_pass))
    meta = [s for s in snaps if s["id"] == snap_id][0]["component"]
    assert meta["haproxy_version"].startswith("2."), meta
    assert meta["servers"] == 3 and meta["tables"] == 1 and meta["maps"] == 1 and meta["files"] == 4, meta
    assert ["app", "s1", "maint", 10] in meta["server_state"] and ["app", "s2", "ready", 7] in meta["server_state"], meta
    assert json.loads(shown["tasks"][0]["component_metadata"]) == meta
    assert f"haproxy_version={meta['haproxy_version']}" in c.ok("backup", "show", sid)

    # Damage: every file changed, a new *.cfg added, the certificate replaced,
    # haproxy reloaded on that, and the runtime state reset.
    (etc / "haproxy.cfg").write_text((etc / "haproxy.cfg").read_text().replace("timeout client 5s", "timeout client 9s"))
    (etc / "hosts.map").write_text("www.example.com other\n")
    write_config_backend = (etc / "conf.d" / "10-app.cfg").read_text().replace("weight 20", "weight 99")
    (etc / "conf.d" / "10-app.cfg").write_text(write_config_backend)
    (etc / "conf.d" / "20-extra.cfg").write_text("backend extra\n    server x1 127.0.0.1:1 weight 3\n")
    make_certificate(etc / "certs" / "site.pem", "impostor.example")
    h.reload()
    h.ok("set server app/s1 state ready")
    h.ok("set server app/s3 state ready")
    assert h.servers() != servers_before
    assert h.table("app") == {}
    assert tree(etc) != files_before

    rc, out, err = c.ctl("restore", sid, "--component", "lb", "--wait")
    assert rc == 0, f"restore exited {rc}\n{out}\n{err}\n{c.logs()}"
    r = c.json("restore", "show", restore_id(out))
    assert lower_enum(r.get("state", ""), "set_state_") == "complete", json.dumps(r, indent=1)

    # The files are back byte for byte; what was added since is kept aside, not read by haproxy.
    after = tree(etc)
    for rel, data in files_before.items():
        assert after.get(rel) == data, f"'{rel}' differs after the restore"
    assert "conf.d/20-extra.cfg" not in after, sorted(after)
    assert any(p.startswith("conf.d/20-extra.cfg.cairn-old-") for p in after), sorted(after)
    assert any(p.startswith("certs/site.pem.cairn-old-") for p in after), "the replaced certificate was not kept aside"
    # haproxy runs on the restored configuration with the runtime state as it was.
    servers_after = h.servers()
    assert ("extra", "x1") not in servers_after, servers_after
    assert servers_after == servers_before, (servers_after, servers_before)
    assert h.table("app").get("10.1.2.3", {}).get("gpc0") == "42", h.table("app")
    assert h.map(etc / "hosts.map") == map_before
    assert os.listdir(staging) == [], f"staging left behind: {os.listdir(staging)}"


def test_haproxy_restore_refused_by_haproxy_check_changes_nothing(lb, tmp_path):
    c, h, etc, staging = lb
    good_cert = (etc / "certs" / "site.pem").read_bytes()
    # A backup whose certificate is not one: haproxy keeps running on the good
    # one (it reads certificates at start), the backup reads the bad one.
    (etc / "certs" / "site.pem").write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    sid, _ = backup(c)
    (etc / "certs" / "site.pem").write_bytes(good_cert)

    h.ok("set server app/s2 weight 3")
    files_before = tree(etc)
    servers_before = h.servers()
    pid_before = h.pid()

    rc, out, err = c.ctl("restore", sid, "--component", "lb", "--wait")
    assert rc != 0, f"a restore haproxy -c refuses succeeded\n{out}\n{err}"
    r = c.json("restore", "show", restore_id(out))
    assert lower_enum(r.get("state", ""), "set_state_") == "failed", json.dumps(r, indent=1)
    restores = [t for t in r["tasks"] if lower_enum(t.get("kind", ""), "task_kind_") == "restore"]
    assert restores, r
    why = json.dumps(restores[0].get("reasons", []))
    assert "haproxy -c refused" in why and "nothing was changed" in why, why
    # haproxy's own words, naming the real certificate path (not the staging copy).
    assert f"{etc}/certs/site.pem" in why, why
    assert str(staging) not in why, why

    assert tree(etc) == files_before, "files changed although haproxy -c failed"
    assert h.pid() == pid_before, "haproxy was reloaded although the check failed"
    assert f"Pid: {pid_before}\n" in h.cli("show info")
    assert h.servers() == servers_before
    assert os.listdir(staging) == [], f"staging left behind: {os.listdir(staging)}"


def test_an_agent_killed_with_the_files_swapped_puts_them_back_at_its_start(lb, tmp_path):
    """The agent SIGKILLed after the restored files went in and before haproxy
    was reloaded on them (failpoint restore.haproxy.swapped): the restore reads
    failed (agent_lost); at the agent's restart every file is as it was before
    the restore (a map changed after the backup among them), the restored ones
    kept aside, haproxy reloaded and answering, and `restore show` says so
    (docs/protocol.md § An agent stopped during an in-place restore)."""
    c, h, etc, staging = lb
    sid, _ = backup(c)
    (etc / "hosts.map").write_text("www.example.com app\nlive.example.com app\n")  # after the backup
    (etc / "conf.d" / "20-extra.cfg").write_text("backend extra\n    server x1 127.0.0.1:1 weight 3\n")
    h.reload()
    live = tree(etc)
    (tmp_path / "failpoints").write_text("restore.haproxy.swapped kill\n")

    def swapped():
        assert tree(etc) != live, "the restored files were not in place when the agent died"
    detail = killed_mid_restore(c, "node-a", [sid, "--component", "lb"], while_dead=swapped)
    assert "haproxy was reloaded on them" in detail, detail
    after = tree(etc)
    for rel, data in live.items():
        assert after.get(rel) == data, f"'{rel}' is not as it was before the restore: {detail}"
    assert any(p.startswith("hosts.map.cairn-failed-") for p in after), sorted(after)
    assert ("extra", "x1") in h.servers()  # haproxy runs the pre-restore configuration
