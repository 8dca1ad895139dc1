"""What an operator sees through cairnctl: text from agents shown escaped (never
raw to the terminal), agents that are not connected named at once, an agent
with the wrong controller key told so, --check-config warnings, and backup
cancel / watch, restore list and id prefixes. Real daemons on loopback."""
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from cluster import AGENT, CTL, backup_set_id, cluster, lower_enum, write_random_file, task_state, set_state  # noqa: F401
from test_streaming import shim  # noqa: F401  (the LD_PRELOAD shim that fails reads of "fail-midway" files)


def start_with_shim(c, name, shim_path, monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", str(shim_path))
    try:
        c.agents[name].start()
    finally:
        monkeypatch.delenv("LD_PRELOAD")
    c.enrol(name)


# An agent-reported path that clears the screen, sets the window title and
# forges a line of its own.
EVIL = "evil\x1b]0;owned\x07\x1b[2J\nbackup set bs-forged: complete fail-midway.bin"


def test_agent_text_is_escaped_in_every_view(cluster, shim, monkeypatch):
    c = cluster
    c.add_agent("node-a", {"ok.txt": b"fine\n"})
    doomed = c.agent_dirs["node-a"]["data"] / EVIL
    write_random_file(doomed, 8 << 20)  # the shim fails reads past 3 MiB
    # A name that is not UTF-8: the agent's result must still parse (proto3
    # strings are UTF-8), with the bytes shown as \xNN.
    latin1 = os.fsencode(c.agent_dirs["node-a"]["data"]) + b"/fail-midway-\xff\xfe.bin"
    write_random_file(latin1, 4 << 20)
    start_with_shim(c, "node-a", shim, monkeypatch)

    p = subprocess.run([os.fspath(CTL), "backup", "create", "--wait"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=c.env(), timeout=120)
    assert p.returncode == 3, f"expected partial (3), got {p.returncode}\n{p.stdout!r}\n{p.stderr!r}\n{c.logs()}"
    # The --wait view (lines, not a terminal) has a header row and no control byte.
    assert b"\x1b" not in p.stdout and b"\x07" not in p.stdout, p.stdout
    assert re.search(rb"^TASK +NODE/COMPONENT +KIND +STATE", p.stdout, re.M), p.stdout
    assert b"\\x1b]0;owned\\x07\\x1b[2J\\nbackup set bs-forged" in p.stdout, p.stdout
    sid = backup_set_id(p.stdout.decode())

    rc, out, err = c.ctl("backup", "show", sid)
    assert rc == 0, err
    assert "\x1b" not in out and "\x07" not in out, repr(out)
    assert "\\x1b]0;owned\\x07\\x1b[2J\\nbackup set bs-forged: complete fail-midway.bin" in out, out
    # No forged line: the name's newline is shown as \n, so no line starts with it.
    assert not any(line.startswith("backup set bs-forged") for line in out.splitlines()), out

    # JSON holds the exact text (escaped as JSON escapes it).
    s = c.json("backup", "show", sid)
    items = [r.get("item") for t in s["tasks"] for r in t.get("reasons", [])]
    assert str(doomed) in items, s
    assert any(i.endswith("/fail-midway-\\xff\\xfe.bin") for i in items), items

    # The repository commands: `repo ls` shows the name escaped too.
    rc, out, err = c.ctl("repo", "ls", "latest", "--repo", c.repo, "--password-file", c.repo_pass)
    assert rc == 0, err
    assert "\x1b" not in out


def test_offline_agent_queued_refused_cancelled_and_watched(cluster):
    c = cluster
    c.add_agent("node-a", {"a.txt": b"alpha\n"})
    c.add_agent("node-b", {"b.txt": b"bravo\n"})
    c.enrol("node-a")
    c.enrol("node-b")
    c.agents["node-b"].expect_dead = True
    c.agents["node-b"].stop()
    c.wait_for("node-b shown as not connected", lambda: not (c.find_agent(name="node-b") or {}).get("connected"))

    # Refused: nothing is created, and the error names the agent.
    before = c.json("backup", "list").get("sets", [])
    rc, out, err = c.ctl("backup", "create", "--require-connected")
    assert rc == 1, out
    assert "not connected: 'node-b'" in err and "nothing was created" in err, err
    assert c.json("backup", "list").get("sets", []) == before

    # Queued: said at creation, in show, and in the --wait view.
    rc, out, err = c.ctl("backup", "create")
    assert rc == 0, err
    assert "not connected: 'node-b'" in out and "queued" in out, out
    sid = backup_set_id(out)
    c.wait_for("node-a's task to end", lambda: any(
        t["agent_name"] == "node-a" and task_state(t) == "succeeded" for t in c.json("backup", "show", sid)["tasks"]))
    out = c.ok("backup", "show", sid)
    assert re.search(r"queued: agent 'node-b' not connected since \d{4}-\d\d-\d\d [\d:]+, expires at \d{4}-", out), out

    # Re-attach with a prefix: the same view as --wait, header row and queued line.
    w = c.ctl_popen("backup", "watch", sid[:8])
    time.sleep(2)
    w.send_signal(signal.SIGINT)
    wout, werr = w.communicate(timeout=20)
    assert re.search(rb"^TASK +NODE/COMPONENT", wout, re.M), (wout, werr)
    assert b"queued: agent 'node-b' not connected" in wout, (wout, werr)
    assert b"stopped waiting" in werr, werr

    # Cancel (by prefix): open tasks end failed, "cancelled by operator"; the set ends.
    out = c.ok("backup", "cancel", sid[:10])
    assert "1 task(s) cancelled" in out, out
    s = c.json("backup", "show", sid)
    assert set_state(s) == "partial", s
    b = [t for t in s["tasks"] if t["agent_name"] == "node-b"][0]
    assert task_state(b) == "failed" and any(r["detail"] == "cancelled by operator" for r in b["reasons"]), b

    # An ambiguous prefix is refused with the candidates listed (the locks of
    # the cancelled set are free again).
    rc, out, err = c.ctl("backup", "create", "--node", "node-b")
    assert rc == 0, err
    sid2 = backup_set_id(out)
    rc, out, err = c.ctl("backup", "show", "bs-")
    assert rc == 1 and "is ambiguous" in err and sid in err and sid2 in err, err
    c.ok("backup", "cancel", sid2)

    # The agent comes back: the cancelled task is not sent to it.
    c.agents["node-b"].start()
    c.wait_for("node-b connected again", lambda: c.connected("node-b"))
    time.sleep(1)
    b = [t for t in c.json("backup", "show", sid)["tasks"] if t["agent_name"] == "node-b"][0]
    assert task_state(b) == "failed", b

    # restore list, show by prefix, watch of a finished restore.
    rc, out, err = c.ctl("restore", sid[:10], "--node", "node-a", "--wait")
    assert rc == 0, f"{out}\n{err}\n{c.logs()}"
    rid = [w for w in out.split() if w.startswith("rs-")][0]
    out = c.ok("restore", "list")
    assert rid in out and sid in out and out.splitlines()[0].startswith("ID"), out
    assert rid in c.ok("restore", "show", rid[:7])
    rc, out, err = c.ctl("backup", "watch", rid)
    assert rc == 0 and f"restore {rid}: complete" in out, (out, err)


def test_wrong_controller_key_is_named(cluster, tmp_path):
    c = cluster
    c.add_agent("node-w")
    other = tmp_path / "other-keys"
    c.ok("keys", "init", "--dir", other)
    cfg = c.agent_dirs["node-w"]["config"]
    right = (c.keys / "controller-curve.pub").read_text().strip()
    wrong = (other / "controller-curve.pub").read_text().strip()
    cfg.write_text(cfg.read_text().replace(right, wrong))
    c.agents["node-w"].expect_dead = True
    c.agents["node-w"].start()
    log = c.agents["node-w"].log
    c.wait_for("the agent naming controller.public_key", lambda: "controller.public_key' may be wrong" in
               log.read_text(errors="replace") and "CURVE handshake got no answer" in log.read_text(errors="replace"),
               timeout=15)
    # cairnctl in the same situation names the key file too, not only "is it running?" (issue 32).
    keys = tmp_path / "operator-keys-wrong-server"
    shutil.copytree(c.keys, keys)
    (keys / "controller-curve.pub").write_text(wrong + "\n")
    rc, out, err = c.ctl("status", "--key-dir", keys, "--timeout", "3")
    assert rc != 0 and "CURVE handshake got no answer" in err and f"'{keys}/controller-curve.pub' may not be" in err, err
    # The controller stopped: that is still said as before.
    c.controller.stop()
    rc, out, err = c.ctl("status", "--timeout", "2")
    assert rc != 0 and "is it running and listening there?" in err, err


def test_controller_check_config_refuses_what_start_refuses(cluster, tmp_path):
    """--check-config read the TOML only: a 0644 HTTP token file or a 0640
    signing key passed it and then stopped the controller at start, with exit 1
    where RestartPreventExitStatus=2 expects 2 (issue 32)."""
    from cluster import CONTROLLER
    c = cluster
    token = tmp_path / "http.token"
    token.write_text("t0k3n\n")
    os.chmod(token, 0o644)
    cfg = c.controller_cfg
    cfg.write_text(cfg.read_text().replace('[http]\nlisten = "127.0.0.1:0"', f'[http]\nlisten = "127.0.0.1:0"\ntoken_file = "{token}"'))

    def check():
        p = subprocess.run([os.fspath(CONTROLLER), "--config", os.fspath(cfg), "--check-config"], capture_output=True, text=True)
        return p.returncode, p.stdout + p.stderr
    rc, out = check()
    assert rc == 2 and str(token) in out and "chmod 600" in out, out
    os.chmod(token, 0o600)
    assert check() == (0, f"{cfg}: ok\n")
    key = c.keys / "controller-signing.key"
    os.chmod(key, 0o640)
    rc, out = check()
    assert rc == 2 and str(key) in out, out
    # Start refuses it the same way, with the same exit status.
    p = subprocess.run([os.fspath(CONTROLLER), "--config", os.fspath(cfg)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and str(key) in p.stderr, p.stderr
    os.chmod(key, 0o600)


def test_check_config_warns_about_missing_paths_and_repositories(cluster, tmp_path):
    c = cluster
    c.add_agent("node-c")
    cfg = c.agent_dirs["node-c"]["config"]
    data = os.fspath(c.agent_dirs["node-c"]["data"])
    text = cfg.read_text()
    missing_repo = tmp_path / "no-repo-here"
    text = text.replace(f'paths = ["{data}"]', f'paths = ["{data}", "{tmp_path}/gone", "{tmp_path}/none-*.conf"]')
    text = text.replace(f'path = "{c.repo}"', f'path = "{missing_repo}"')
    cfg.write_text(text)
    p = subprocess.run([os.fspath(AGENT), "--config", os.fspath(cfg), "--check-config"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    out, err = p.stdout.decode(), p.stderr.decode()
    assert p.returncode == 0, err
    assert f"declared path '{tmp_path}/gone' does not exist" in err, err
    assert f"declared glob '{tmp_path}/none-*.conf' matches nothing" in err, err
    assert f"repository 'main': '{missing_repo}' does not exist" in err, err
    assert f"'{data}'" not in err, err  # the existing path is not warned about
    assert "3 warning(s)" in out, out


def test_approve_all_pending_lists_the_keys_and_approves_exactly_those(cluster):
    c = cluster
    names = ["node-a", "node-b", "node-c"]
    for n in names:
        c.add_agent(n, {"f.txt": n.encode()})
        c.agents[n].start()
    keys = {n: c.agent_dirs[n]["key"] for n in names}
    c.wait_for("three pending agents", lambda: all(c._pending(keys[n]) for n in names), timeout=30)
    # Without a terminal and without --yes: the keys are shown, nothing is approved.
    rc, out, err = c.ctl("agent", "approve", "--all-pending")
    assert rc != 0 and "needs a confirmation" in err and "--yes" in err, err
    for n in names:
        assert keys[n] in err, (n, err)
    assert all(c._pending(keys[n]) for n in names)
    rc, out, err = c.ctl("agent", "approve", "--all-pending", "node-a")
    assert rc != 0 and "not both" in err, err
    out = c.ok("agent", "approve", "--all-pending", "--yes")
    assert "approved 3 agent(s)" in out, out
    for n in names:
        c.wait_for(f"{n} connected", lambda: c.connected(n), timeout=30)
    assert "no agent is pending" in c.ok("agent", "approve", "--all-pending", "--yes")
    set_id = backup_set_id(c.ok("backup", "create", "--wait"))
    assert set_state(c.json("backup", "show", set_id)) == "complete"
