"""kill -9 of a backup at random points leaves a repository that checks clean and
that the next backup completes, reusing what the killed one wrote; kill -9 of a
restore leaves partial files that the next restore into the same target removes."""
import os
import random
import signal
import subprocess
import time

from conftest import Cairn, assert_same_tree, dir_bytes, restored_path, summary_of, write_random, write_secret

SOURCE_SIZE = 300 << 20


def kill_when(proc, repo, deadline_s=None, stored_bytes=None):
    """Kills proc with SIGKILL after deadline_s, or once data/ holds stored_bytes. Returns
    False when the backup finished first."""
    start = time.monotonic()
    while proc.poll() is None:
        if deadline_s is not None and time.monotonic() - start >= deadline_s:
            break
        if stored_bytes is not None and os.path.isdir(os.path.join(repo, "data")) and \
                dir_bytes(os.path.join(repo, "data")) >= stored_bytes:
            break
        time.sleep(0.005)
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def test_kill_9_during_backup(tmp_path):
    rng = random.Random(20240611)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    write_random(src / "big.bin", 200 << 20)
    write_random(src / "sub" / "mid.bin", 80 << 20)
    for i in range(50):
        write_random(src / "sub" / f"small{i}.bin", (SOURCE_SIZE - (280 << 20)) // 50)
    pw = write_secret(tmp_path / "pw", "kill me softly")
    # One kill right after the start, then three at random amounts of data written.
    points = [("time", 0.05)] + [("bytes", rng.uniform(0.1, 0.95)) for _ in range(3)]
    for round_no, (kind, x) in enumerate(points):
        c = Cairn(tmp_path / f"repo{round_no}", pw)
        c.init()
        proc = c.popen("backup", "--json", src, stdout=open(os.devnull, "wb"), stderr=open(os.devnull, "wb"))
        killed = kill_when(proc, c.repo, deadline_s=x if kind == "time" else None,
                           stored_bytes=int(x * SOURCE_SIZE) if kind == "bytes" else None)
        assert killed, f"round {round_no}: the backup finished before the kill point {kind}={x}; make the source bigger"
        rc, out, err = c("check")
        assert rc == 0, f"round {round_no} ({kind}={x:.2f}): check after kill -9 failed:\n{out}{err}"
        assert c.snapshots() == [], f"round {round_no}: the killed backup left a snapshot"
        had_index = bool(os.listdir(c.repo / "index")) if (c.repo / "index").is_dir() else False
        summary, err = c.backup(src)
        print(f"round {round_no} {kind}={x:.2f}: index before re-run: {had_index}, re-run stored "
              f"{summary['data_added_raw']} of {summary['bytes_total']} bytes")
        assert summary["partial"] is False
        if had_index:
            assert summary["data_added_raw"] < summary["bytes_total"], \
                f"round {round_no}: the re-run stored everything again ({summary['data_added_raw']} bytes) although an index existed"
        assert len(c.snapshots()) == 1
        if round_no == len(points) - 1:
            rc, out, err = c("check", "--read-data")
            assert rc == 0, f"check --read-data after kill and re-run failed:\n{out}{err}"
            target = tmp_path / "restore"
            target.mkdir()
            rc, out, err = c.restore("latest", target)
            assert rc == 0, err
            assert_same_tree(src, restored_path(target, src))
        else:
            rc, out, err = c("check")
            assert rc == 0, f"round {round_no}: check after the re-run failed:\n{out}{err}"


# ---- kill -9 of a restore ---------------------------------------------------

TEMP_PREFIX = ".cairn-restore."


def restore_source(root, files=6, size=20 << 20):
    """Files big enough that a restore is caught writing them: several of 20 MB
    (written in parallel, each a temporary file until it is complete), and
    small ones beside them."""
    src = root / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(files):
        write_random((src / "sub" if i % 2 else src) / f"big{i}.bin", size)
    for i in range(20):
        (src / "sub" / f"small{i}.txt").write_text(f"small file {i}\n" * (i + 1))
    (src / ".cairn-restore.notes.txt").write_text("a user's file that merely starts like a temporary one\n")
    return src


def temp_files(target):
    """The partial files under target ({path: size})."""
    out = {}
    for dp, _, fns in os.walk(target):
        for f in fns:
            p = os.path.join(dp, f)
            if f.startswith(TEMP_PREFIX) and f != ".cairn-restore.notes.txt":
                try:
                    out[p] = os.lstat(p).st_size
                except FileNotFoundError:  # renamed into place meanwhile
                    pass
    return out


def kill_restores(start, target, kills, attempts=10):
    """Starts restores into target with start(overwrite) and kills each with
    SIGKILL as soon as a temporary file of its own appears, until `kills` of
    them have left partial files behind. Each restore after the first one gets
    --overwrite (the target holds what the one before left). Returns the
    partial files the last one left ({path: size})."""
    done = 0
    for attempt in range(attempts):
        before = temp_files(target)
        proc = start(os.path.isdir(target) and bool(os.listdir(target)))
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if set(temp_files(target)) - set(before):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
        rc = proc.wait()
        assert rc == -signal.SIGKILL, f"attempt {attempt}: the restore ended ({rc}) before it wrote a temporary file; make the files bigger"
        now = temp_files(target)
        # The killed restore had removed what the one before it left before it wrote anything.
        assert not set(now) & set(before), f"attempt {attempt}: partial files of the restore before are still there: " \
                                           f"{sorted(set(now) & set(before))}"
        if now:
            done += 1
            if done == kills:
                return now
    raise AssertionError(f"only {done} of {attempts} killed restores left a partial file behind; make the files bigger")


def finish_after_kills(run, target, src, left):
    """Restores into target again, first without --overwrite (refused, naming
    what the killed restore left, nothing changed), then with it: the tree is
    the snapshot's, nothing else, and the removed partial files are said on
    stderr and in the --json summary."""
    rc, out, err = run(False)
    assert rc == 1, (rc, out, err)
    assert "partial files an interrupted restore left" in err and "--overwrite" in err, err
    assert temp_files(target) == left
    rc, out, err = run(True)
    assert rc == 0, (rc, out, err)
    line = (f"removed {len(left)} partial file(s) ({sum(left.values())} bytes) an earlier interrupted restore left "
            f"in '{target}'")
    assert line in err, (line, err)
    summary = summary_of(out)
    assert summary["leftovers_removed"] == {"files": len(left), "bytes": sum(left.values())}, summary
    assert temp_files(target) == {}
    assert_same_tree(src, restored_path(target, src))
    # Nothing beside the restored tree either: only the directories leading to it.
    chain = set()
    p = os.path.abspath(src)
    while p != "/":
        chain.add(p.lstrip("/"))
        p = os.path.dirname(p)
    inside = os.path.abspath(src).lstrip("/")
    for dp, dns, fns in os.walk(target):
        rel = os.path.relpath(dp, target)
        if rel == inside or rel.startswith(inside + "/"):
            continue
        assert (rel == "." or rel in chain) and fns == [], (rel, dns, fns)


def test_kill_9_during_restore_then_a_restore_with_overwrite_removes_what_it_left(tmp_path):
    """kill -9 of `repo restore` leaves the temporary files it was writing
    (they cannot be cleaned up by the process). The next restore into the same
    target removes them before it writes anything (each killed one here
    already removed its predecessor's), says how many and how big, and ends
    with exactly the snapshot's tree."""
    src = restore_source(tmp_path)
    c = Cairn(tmp_path / "repo", write_secret(tmp_path / "pw", "kill me softly"))
    c.init()
    c.backup(src)
    target = tmp_path / "out"
    start = lambda overwrite: c.popen("restore", "latest", "--target", target, *(["--overwrite"] if overwrite else []),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    left = kill_restores(start, target, kills=4)
    finish_after_kills(lambda overwrite: c.restore("latest", target, extra=("--json",) + (("--overwrite",) if overwrite else ())),
                       target, src, left)
