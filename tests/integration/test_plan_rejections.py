"""Bad plans reach a real agent through the real controller and are refused,
each with its own reason, visible in `cairnctl backup show` and in the audit
outbox; nothing is executed and the agent keeps working.

How a bad plan is made: with the agent stopped, `cairnctl backup create`
leaves a signed plan in the catalog for delivery when the agent returns. The
test replaces those stored bytes with a bad envelope made by
`cairn-plan-forge` (tests/tools/plan_forge.cc) from the real one — the same
thing a tampered catalog, a man in the middle or a broken controller would
deliver. Then the agent starts, the controller delivers, the agent decides.
"""
import json
import subprocess
import time

import pytest

from cluster import BUILD, backup_set_id, catalog, cluster, lower_enum  # noqa: F401

FORGE = BUILD / "tests" / "cairn-plan-forge"

# fault -> the reason the agent must give (error_code_name form, as cairnctl prints it)
FAULTS = {
    "bad_signature": "bad_signature",
    "missing_signature": "missing_signature",
    "unknown_key": "unknown_key",
    "expired": "expired",
    "not_yet_valid": "not_yet_valid",
    "wrong_target": "wrong_target",
    "replayed": "replayed",
    "older_sequence": "older_sequence",
    "unknown_type": "unknown_payload_type",
    "malformed_payload": "malformed_payload",
    "malformed_envelope": "malformed_envelope",
}


def plan_of_set(c, sid):
    with catalog(c) as con:
        rows = con.execute("SELECT DISTINCT plan_id FROM tasks WHERE backup_set_id = ?", (sid,)).fetchall()
    assert len(rows) == 1 and rows[0][0], f"set {sid} should have one plan: {rows}"
    return rows[0][0]


def envelope(c, plan_id):
    with catalog(c) as con:
        (env,) = con.execute("SELECT envelope FROM plans WHERE id = ?", (plan_id,)).fetchone()
    assert env, f"plan {plan_id} has no stored envelope"
    return bytes(env)


def forge(c, fault, env, **kw):
    argv = [str(FORGE), "--fault", fault, "--signing-key", str(c.keys / "controller-signing.key")]
    if "target" in kw:
        argv += ["--target-key", kw["target"]]
    if "sequence" in kw:
        argv += ["--sequence", str(kw["sequence"])]
    p = subprocess.run(argv, input=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    assert p.stdout and p.stdout != env
    return p.stdout


def repo_snapshot_count(c):
    out = c.ok("repo", "snapshots", "--json", "--repo", c.repo, "--password-file", c.repo_pass)
    return len(json.loads(out))


@pytest.mark.parametrize("fault", list(FAULTS))
def test_bad_plan_is_refused_with_its_reason(cluster, fault):
    c = cluster
    if not FORGE.exists():
        pytest.fail(f"{FORGE} is not built")
    c.add_agent("node-a", {"a.txt": b"alpha " * 1000})
    c.enrol("node-a")
    # A first, good plan: the agent's journal now holds sequence 1 and its id/nonce.
    rc, out, err = c.ctl("backup", "create", "--wait")
    assert rc == 0, f"{out}\n{err}\n{c.logs()}"
    good_plan = plan_of_set(c, backup_set_id(out))
    snaps_before = repo_snapshot_count(c)

    # The agent goes away; the next plan waits in the catalog.
    agent = c.agents["node-a"]
    agent.stop()
    c.wait_for("the controller noticing node-a is gone", lambda: not (c.find_agent(name="node-a") or {}).get("connected"))
    out = c.ok("backup", "create")
    sid = backup_set_id(out)
    plan_id = plan_of_set(c, sid)
    real = envelope(c, plan_id)
    if fault == "replayed":
        bad = envelope(c, good_plan)  # the bytes of a plan the agent already ran
    elif fault == "wrong_target":
        # A real agent's key, just not this agent's.
        other = c.add_agent("node-b")
        bad = forge(c, fault, real, target=c.agent_dirs["node-b"]["key"])
        del c.agents["node-b"]  # configured only for its key; never started
    elif fault == "older_sequence":
        bad = forge(c, fault, real, sequence=1)
    else:
        bad = forge(c, fault, real)
    with catalog(c) as con:
        con.execute("UPDATE plans SET envelope = ? WHERE id = ?", (bad, plan_id))

    agent.start()
    want = FAULTS[fault]

    def rejected():
        s = c.json("backup", "show", sid)
        return s if lower_enum(s.get("state", ""), "set_state_") != "running" else None

    s = c.wait_for(f"set {sid} ending after the {fault} plan", rejected, timeout=30)
    assert lower_enum(s["state"], "set_state_") == "failed", s
    (t,) = s["tasks"]
    assert lower_enum(t["state"], "task_state_") == "rejected", t
    codes = [lower_enum(r.get("code", ""), "error_code_") for r in t.get("reasons", [])]
    assert codes == [want], f"expected reason {want}, got {t.get('reasons')}"
    text = c.ok("backup", "show", sid)
    assert want in text, text

    # The audit outbox has the refusal with the same reason, for this plan.
    with catalog(c) as con:
        rows = con.execute("SELECT outcome, reason, details FROM audit_outbox WHERE action = 'plan.reject' AND target = ?",
                           ("plan:" + plan_id,)).fetchall()
    assert rows and rows[0][0] == "rejected" and rows[0][1] == want, rows

    # Nothing ran: no snapshot was written, the agent says it refused the plan.
    assert repo_snapshot_count(c) == snaps_before
    assert "plan refused" in agent.log.read_text(errors="replace"), c.logs()

    # And the agent is not wedged: the next good plan runs.
    rc, out, err = c.ctl("backup", "create", "--wait")
    assert rc == 0, f"after the {fault} plan a good one failed: {out}\n{err}\n{c.logs()}"
    assert repo_snapshot_count(c) == snaps_before + 1
