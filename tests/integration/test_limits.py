"""Backups and restores inside a memory and CPU limit (issue 13): under a 256 MiB
memory limit and a quota of two CPUs a backup of more data than the limit
completes, is not OOM-killed, says the budget it took from the cgroup, and the
restore under the same limit gives the bytes back.

The limit is what `systemd-run --scope -p MemoryMax=256M -p CPUQuota=200%`
makes when systemd is PID 1. Where it is not (containers, this CI machine:
"System has not been booted with systemd as init system (PID 1). Can't
operate."), the test makes the same limit itself: a cgroup of its own (v2
memory.max and cpu.max, or v1 memory.limit_in_bytes and cpu.cfs_quota_us)
that the command joins before it execs. That is a substitute for systemd's
scope, named as one; the kernel enforces the limit the same way."""
import os
import pathlib
import shutil
import subprocess
import uuid

import pytest

from conftest import BIN, assert_same_tree, restored_path, write_random

LIMIT = 256 << 20
V2 = pathlib.Path("/sys/fs/cgroup")
V1_MEMORY = pathlib.Path("/sys/fs/cgroup/memory")
V1_CPU = pathlib.Path("/sys/fs/cgroup/cpu")


def _systemd_scope_works():
    if not shutil.which("systemd-run"):
        return False
    p = subprocess.run(["systemd-run", "--scope", "--quiet", "-p", "MemoryMax=256M", "true"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    return p.returncode == 0


class Limit:
    """A memory limit of LIMIT and a CPU quota of two CPUs, for commands run with prefix()."""

    def __init__(self, name):
        self.dirs, self.kind, self.events = [], None, None
        if _systemd_scope_works():
            self.kind = "systemd-run --scope"
            self._prefix = ["systemd-run", "--scope", "--quiet", "-p", f"MemoryMax={LIMIT}", "-p", "CPUQuota=200%"]
            return
        controllers = (V2 / "cgroup.controllers").read_text().split() if (V2 / "cgroup.controllers").exists() else []
        if "memory" in controllers:
            d = V2 / name
            try:
                (V2 / "cgroup.subtree_control").write_text("+memory +cpu")
                d.mkdir()
            except OSError as e:
                pytest.skip(f"cannot make a cgroup v2 group: {e}")
            self.dirs = [d]
            (d / "memory.max").write_text(str(LIMIT))
            if (d / "cpu.max").exists():
                (d / "cpu.max").write_text("200000 100000")
            self.kind, self.events = "cgroup v2 (substitute for systemd-run --scope)", d / "memory.events"
        elif (V1_MEMORY / "memory.limit_in_bytes").exists():
            try:
                m = V1_MEMORY / name
                m.mkdir()
                self.dirs.append(m)
                if (V1_CPU / "cpu.cfs_quota_us").exists():
                    c = V1_CPU / name
                    c.mkdir()
                    self.dirs.append(c)
                    (c / "cpu.cfs_period_us").write_text("100000")
                    (c / "cpu.cfs_quota_us").write_text("200000")
            except OSError as e:
                self.close()
                pytest.skip(f"cannot make a cgroup v1 group: {e}")
            (m / "memory.limit_in_bytes").write_text(str(LIMIT))
            self.kind, self.events = "cgroup v1 (substitute for systemd-run --scope)", m / "memory.oom_control"
        else:
            pytest.skip("no systemd scope and no writable memory cgroup on this machine")
        # The shell joins every group, then becomes the command.
        joins = " && ".join(f'echo $$ > "{d}/cgroup.procs"' for d in self.dirs)
        self._prefix = ["sh", "-c", joins + ' && exec "$@"', "sh"]

    def prefix(self):
        return list(self._prefix)

    def oom_kills(self):
        if self.events is None or not self.events.exists():
            return 0
        for line in self.events.read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == "oom_kill":
                return int(v)
        return 0

    def close(self):
        for d in self.dirs:
            try:
                d.rmdir()
            except OSError:
                pass


@pytest.fixture
def limit():
    if b"__asan_init" in pathlib.Path(BIN).read_bytes():
        # AddressSanitizer's shadow memory and quarantine are charged to the
        # cgroup too: a limit sized for cairn measures the sanitizer (the
        # normal build runs this test).
        pytest.skip("a memory limit is not meaningful under AddressSanitizer")
    lim = Limit(f"cairn-test-{uuid.uuid4().hex[:8]}")
    yield lim
    lim.close()


def make_data(src):
    """More data than the limit: large incompressible and compressible files, and many small ones."""
    src.mkdir()
    for i in range(3):
        write_random(src / f"random-{i}.bin", 96 << 20)
    with open(src / "text.log", "wb") as f:
        line = b"2026-11-24T10:00:00Z INFO request served in 12 ms path=/api/v1/items status=200\n"
        f.write(line * ((64 << 20) // len(line)))
    small = src / "small"
    small.mkdir()
    for i in range(2000):
        (small / f"f{i:04d}").write_bytes(os.urandom(1 + (i * 37) % 8192))


def test_backup_and_restore_under_a_256_mib_memory_limit(cairn, tmp_path, limit):
    src = tmp_path / "src"
    make_data(src)
    lim = cairn.__class__(cairn.repo, cairn.password_file, prefix=limit.prefix())
    rc, out, err = lim("backup", src, timeout=900)
    assert rc == 0, f"backup under {limit.kind} exited {rc} (137: killed for memory)\n{err[-3000:]}"
    # The budget came from the limit: half of it, said once on stderr.
    assert "memory budget 128 MiB (half of the cgroup memory limit, 256 MiB)" in err, err[-2000:]
    assert "usable CPUs 2" in err, err[-2000:]
    snaps = cairn.snapshots()
    assert len(snaps) == 1

    target = tmp_path / "restore"
    target.mkdir()
    rc, out, err = lim("restore", "latest", "--target", target, timeout=900)
    assert rc == 0, f"restore under {limit.kind} exited {rc} (137: killed for memory)\n{err[-3000:]}"
    assert "memory budget 128 MiB" in err, err[-2000:]
    assert limit.oom_kills() == 0, f"the kernel killed a process of {limit.kind} for memory"
    assert_same_tree(src, restored_path(target, src))

    # A budget given on the command line wins over the cgroup's, and one below the floor is refused.
    rc, out, err = lim("check", "--read-data", "--memory-budget", "100M")
    assert rc == 0 and "memory budget 100 MiB (--memory-budget)" in err, err[-2000:]
    rc, out, err = cairn("backup", src, "--memory-budget", "8M")
    assert rc != 0 and "below the minimum of 96 MiB" in err, err
    rc, out, err = cairn("backup", src, "--memory-budget", "lots")
    assert rc != 0 and "is not a size" in err, err
    assert len(cairn.snapshots()) == 1  # the refused ones wrote nothing
