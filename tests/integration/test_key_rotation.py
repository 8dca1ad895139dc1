"""Controller key rotation end to end: `cairnctl keys rotate` on a running
controller with one agent connected and one offline. Both are brought over by
the signed announcement (no agent touched by hand), a plan issued before the
rotation still runs, the retired key's plans are refused, and the new key
survives a controller restart."""
import shutil
import subprocess

from cluster import BUILD, backup_set_id, catalog, cluster, lower_enum  # noqa: F401

FORGE = BUILD / "tests" / "cairn-plan-forge"


def set_state(c, sid):
    return lower_enum(c.json("backup", "show", sid).get("state", ""), "set_state_")


def trusts(c, name):
    a = c.find_agent(name=name) or {}
    return bool(a.get("trusts_active_key"))


def test_key_rotation_reaches_online_and_offline_agents(cluster):
    c = cluster
    c.add_agent("node-a", {"a.txt": b"alpha " * 1000})
    c.add_agent("node-b", {"b.txt": b"bravo " * 1000})
    c.enrol("node-a")
    c.enrol("node-b")
    old_id = c.json("status")["active_key_id"]
    c.wait_for("both agents trusting the first key", lambda: trusts(c, "node-a") and trusts(c, "node-b"))
    old_key_copy = c.base / "old-signing.key"
    shutil.copy(c.keys / "controller-signing.key", old_key_copy)
    old_pub = (c.keys / "controller-signing.pub").read_text()

    # node-b goes offline with a plan waiting for it, signed by the old key.
    c.agents["node-b"].stop()
    c.wait_for("node-b disconnected", lambda: not (c.find_agent(name="node-b") or {}).get("connected"))
    waiting = backup_set_id(c.ok("backup", "create", "--node", "node-b"))

    out = c.ok("keys", "rotate")
    assert f"signing key rotated: {old_id} -> " in out, out
    new_id = out.split(f"{old_id} -> ")[1].split()[0]
    assert new_id != old_id
    assert "sent to 1 connected agent(s)" in out and "the other 1 approved agent(s)" in out, out
    assert "1 unanswered plan(s) re-signed" in out, out
    assert c.json("status")["active_key_id"] == new_id
    assert (c.keys / "controller-signing.pub").read_text() != old_pub
    assert not (c.keys / "controller-signing.key.next").exists()

    # The connected agent took the announcement and runs plans signed by the new key.
    c.wait_for("node-a trusting the new key", lambda: trusts(c, "node-a"))
    assert not trusts(c, "node-b")
    text = c.ok("agent", "list")
    assert "KEY TRUST" in text, text
    rc, out, err = c.ctl("backup", "create", "--node", "node-a", "--wait")
    assert rc == 0, f"{out}\n{err}\n{c.logs()}"

    # The offline agent comes back: announcement first, then the re-signed plan runs.
    c.agents["node-b"].start()
    c.wait_for(f"set {waiting} (issued before the rotation) complete", lambda: set_state(c, waiting) == "complete",
               timeout=30)
    c.wait_for("node-b trusting the new key", lambda: trusts(c, "node-b"))
    assert "key announcement" in c.agents["node-b"].log.read_text(errors="replace")

    with catalog(c) as con:
        acks = con.execute("SELECT target, outcome FROM audit_outbox WHERE action = 'agent.key_announcement'").fetchall()
        announce = con.execute("SELECT reason, details FROM audit_outbox WHERE action = 'controller_key.announce'").fetchall()
    by_agent = {}
    for target, outcome in acks:
        by_agent.setdefault(target, set()).add(outcome)
    assert len(by_agent) == 2 and all(o == {"accepted"} for o in by_agent.values()), acks
    assert len(announce) == 1 and old_id in announce[0][1], announce

    # A plan signed with the retired key is refused by the agent.
    c.agents["node-a"].stop()
    c.wait_for("node-a disconnected", lambda: not (c.find_agent(name="node-a") or {}).get("connected"))
    forged = backup_set_id(c.ok("backup", "create", "--node", "node-a"))
    with catalog(c) as con:
        (plan_id,) = con.execute("SELECT DISTINCT plan_id FROM tasks WHERE backup_set_id = ?", (forged,)).fetchone()
        (env,) = con.execute("SELECT envelope FROM plans WHERE id = ?", (plan_id,)).fetchone()
    p = subprocess.run([str(FORGE), "--fault", "resign", "--signing-key", str(old_key_copy)], input=bytes(env),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 0, p.stderr
    with catalog(c) as con:
        con.execute("UPDATE plans SET envelope = ? WHERE id = ?", (p.stdout, plan_id))
    c.agents["node-a"].start()
    c.wait_for("the old-key plan refused", lambda: set_state(c, forged) == "failed")
    (t,) = c.json("backup", "show", forged)["tasks"]
    assert [lower_enum(r["code"], "error_code_") for r in t["reasons"]] == ["unknown_key"], t

    # A controller restart keeps the new key, and plans still run everywhere.
    c.controller.stop()
    c.start_controller()
    assert c.json("status")["active_key_id"] == new_id
    c.wait_for("both agents back", lambda: c.connected("node-a") and c.connected("node-b"), timeout=60)
    rc, out, err = c.ctl("backup", "create", "--wait")
    assert rc == 0, f"{out}\n{err}\n{c.logs()}"
