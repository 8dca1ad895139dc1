"""kill -9 of a backup at random points leaves a repository that checks clean and
that the next backup completes, reusing what the killed one wrote."""
import os
import random
import signal
import time

from conftest import Cairn, assert_same_tree, dir_bytes, restored_path, write_random, write_secret

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
