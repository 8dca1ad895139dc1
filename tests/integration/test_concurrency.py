"""Several cairnctl processes on one repository: shared backups, exclusive prune, stale locks."""
import os
import shutil
import signal
import subprocess
import time

from conftest import EXIT_LOCKED, assert_same_tree, restored_path, write_random


def test_two_backups_at_once(cairn, tmp_path):
    root = tmp_path / "src"
    for d in ["shared", "a", "b"]:
        (root / d).mkdir(parents=True)
    write_random(root / "shared" / "big.bin", 50 << 20)
    write_random(root / "a" / "a.bin", 5 << 20)
    write_random(root / "b" / "b.bin", 5 << 20)
    (root / "a" / "a.txt").write_text("a\n")
    (root / "b" / "b.txt").write_text("b\n")
    pa = cairn.popen("backup", "--json", root / "a", root / "shared")
    pb = cairn.popen("backup", "--json", root / "b", root / "shared")
    out_a, err_a = pa.communicate(timeout=300)
    out_b, err_b = pb.communicate(timeout=300)
    assert pa.returncode == 0, err_a.decode()
    assert pb.returncode == 0, err_b.decode()
    rc, out, err = cairn("check", "--read-data")
    assert rc == 0, f"check --read-data after two concurrent backups:\n{out}{err}"
    snaps = cairn.snapshots()
    assert len(snaps) == 2
    for s in snaps:
        target = tmp_path / ("t-" + s["id"][:8])
        target.mkdir()
        rc, out, err = cairn.restore(s["id"], target)
        assert rc == 0, err
        for p in s["paths"]:
            assert_same_tree(p, restored_path(target, p))
    third, _ = cairn.backup(root / "shared")
    assert third["data_added"] < 256 << 10, f"the shared file was stored again: {third['data_added']} bytes added"


def wait_for_lock(repo, proc, timeout=30):
    locks = os.path.join(repo, "locks")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"the backup ended early: {proc.stderr.read().decode() if proc.stderr else ''}"
        if os.path.isdir(locks) and os.listdir(locks):
            return os.listdir(locks)
        time.sleep(0.02)
    raise AssertionError("no lock file appeared under locks/")


def slow_stdin_backup(cairn):
    """A backup whose input the test controls: it holds its lock until stdin is closed."""
    p = cairn.popen("backup", "--stdin", "--stdin-name", "slow.bin", stdin=subprocess.PIPE)
    p.stdin.write(os.urandom(1 << 20))
    p.stdin.flush()
    return p


def test_prune_refused_while_backup_holds_lock(cairn, tmp_path, hostname):
    p = slow_stdin_backup(cairn)
    try:
        wait_for_lock(cairn.repo, p)
        rc, out, err = cairn("prune")
        assert rc == EXIT_LOCKED, f"prune during a backup exited {rc}: {err}"
        assert str(p.pid) in err and hostname in err, f"the holder (pid {p.pid} on {hostname}) is not named: {err}"
        rc, out, err = cairn("forget", "--keep-last", "1")
        assert rc == EXIT_LOCKED, f"forget during a backup exited {rc}: {err}"
        p.stdin.write(os.urandom(1 << 20))
        p.stdin.close()
        assert p.wait(timeout=60) == 0, p.stderr.read().decode()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert not os.listdir(cairn.repo / "locks"), "the finished backup left its lock"
    cairn.ok("prune")
    assert len(cairn.snapshots()) == 1


def test_stale_lock_of_dead_process_is_ignored(cairn, tmp_path):
    p = slow_stdin_backup(cairn)
    try:
        locks = wait_for_lock(cairn.repo, p)
    finally:
        p.kill()  # SIGKILL: the lock stays behind
        p.wait()
    assert os.listdir(cairn.repo / "locks") == locks
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("after the crash\n")
    summary, err = cairn.backup(src)
    assert summary["partial"] is False
    assert "removed stale" in err and f"pid {p.pid}" in err, f"the dead process's lock was not reported as removed: {err}"
    rc, out, err = cairn("prune")  # exclusive: the dead shared lock must not block it either
    assert rc == 0, err
    target = tmp_path / "t"
    target.mkdir()
    rc, out, err = cairn.restore("latest", target)
    assert rc == 0, err
    assert_same_tree(src, restored_path(target, src))


def test_live_lock_never_broken_by_unlock(cairn):
    p = slow_stdin_backup(cairn)
    try:
        locks = wait_for_lock(cairn.repo, p)
        cairn.ok("unlock")
        assert os.listdir(cairn.repo / "locks") == locks, "unlock removed a live lock"
    finally:
        p.stdin.close()
        p.wait(timeout=60)


def test_backup_whose_lock_cannot_be_refreshed_writes_no_snapshot(cairn):
    """A holder that cannot refresh its lock must not commit: another host would by now treat it as stale."""
    env = dict(os.environ, CAIRN_LOCK_TIMING_FOR_TESTS="4,1")  # stale after 4 s, refresh every 1 s: valid for 3 s
    p = cairn.popen("backup", "--stdin", "--stdin-name", "slow.bin", stdin=subprocess.PIPE, env=env)
    locks = cairn.repo / "locks"
    away = cairn.repo / "locks.away"
    try:
        p.stdin.write(os.urandom(1 << 20))
        p.stdin.flush()
        held = wait_for_lock(cairn.repo, p)
        # Every later refresh fails: locks/ is no longer a directory (root can write anywhere, so not chmod).
        os.rename(locks, away)
        locks.write_text("not a directory\n")
        time.sleep(5)
        p.stdin.write(os.urandom(1 << 20))
        p.stdin.close()
        rc = p.wait(timeout=60)
        err = p.stderr.read().decode()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if locks.is_file():
            locks.unlink()
            os.rename(away, locks)
    assert rc == EXIT_LOCKED, f"the backup exited {rc}: {err}"
    assert "could not refresh the repository lock" in err, err
    assert "refusing writing the snapshot" in err and "not been refreshed" in err, err
    assert cairn.snapshots() == [], "a snapshot was written under a lock that was not refreshed"
    # Its lock file stayed behind (locks/ was unusable when it ended); the next command removes it as a dead process's.
    assert sorted(os.listdir(locks)) == sorted(held)
    rc, out, err = cairn("prune")
    assert rc == 0, err
    assert "removed stale" in err and f"pid {p.pid}" in err, err
    assert not os.listdir(locks)


def test_stopped_live_holder_is_never_broken_by_watching(cairn):
    """A live process on this host that stops refreshing (SIGSTOP) still holds its lock: watching does not make it stale."""
    env = dict(os.environ, CAIRN_LOCK_TIMING_FOR_TESTS="2,1")
    p = cairn.popen("backup", "--stdin", "--stdin-name", "slow.bin", stdin=subprocess.PIPE, env=env)
    try:
        p.stdin.write(os.urandom(1 << 20))
        p.stdin.flush()
        wait_for_lock(cairn.repo, p)
        p.send_signal(signal.SIGSTOP)
        held = os.listdir(cairn.repo / "locks")
        rc, out, err = cairn("unlock", "--watch", "4s", env=env)
        assert rc == 0, err
        assert "kept live" in out and str(p.pid) in out, out
        assert os.listdir(cairn.repo / "locks") == held, "unlock --watch removed a live (stopped) holder's lock"
        rc, out, err = cairn("prune", "--retry-lock", "4s", env=env)
        assert rc == EXIT_LOCKED, f"prune exited {rc} while a stopped backup held its lock: {err}"
        assert os.listdir(cairn.repo / "locks") == held
    finally:
        p.send_signal(signal.SIGCONT)
        p.stdin.close()
        p.wait(timeout=60)
