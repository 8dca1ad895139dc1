"""The streaming archiver: a file failing mid-way, hard links across directories
whose trees are written at different times, and a deep tree, all read back exactly."""
import os
import shutil
import subprocess

import pytest

from conftest import EXIT_PARTIAL, assert_same_tree, restored_path, write_random

# Makes every read of a file whose name contains "fail-midway" fail with EIO once
# it reaches 3 MiB: the file opens, its first chunks are stored, then reading fails.
SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/types.h>

static int doomed(int fd) {
  char link[64], path[4096];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n < 0) return 0;
  path[n] = 0;
  return strstr(path, "fail-midway") != NULL;
}
typedef ssize_t (*pread_fn)(int, void*, size_t, off_t);
static ssize_t call(const char* name, int fd, void* buf, size_t n, off_t off) {
  if (off + (off_t)n > (3 << 20) && doomed(fd)) {
    if (off >= (3 << 20)) { errno = EIO; return -1; }
    n = (size_t)((3 << 20) - off);
  }
  pread_fn real = (pread_fn)dlsym(RTLD_NEXT, name);
  return real(fd, buf, n, off);
}
ssize_t pread(int fd, void* buf, size_t n, off_t off) { return call("pread", fd, buf, n, off); }
ssize_t pread64(int fd, void* buf, size_t n, off_t off) { return call("pread64", fd, buf, n, off); }
"""


@pytest.fixture
def shim(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler for the fault-injection shim")
    c = tmp_path / "shim.c"
    c.write_text(SHIM)
    so = tmp_path / "shim.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(so), str(c), "-ldl"], check=True)
    return so


def make_tree(src):
    """A wide and deep tree; hard links whose first link is a big file read late."""
    src.mkdir()
    n = 0
    for a in range(6):
        for b in range(4):
            d = src / f"a{a}" / f"b{b}" / "c" / "d"
            d.mkdir(parents=True)
            for f in range(4):
                (d / f"f{f}.txt").write_bytes(os.urandom(100 + 500 * f))
                n += 1
            (src / f"a{a}" / f"b{b}" / "note").write_text(f"{a} {b}\n")
            n += 1
    write_random(src / "a0" / "0-big.bin", 24 << 20)
    os.link(src / "a0" / "0-big.bin", src / "a5" / "b3" / "c" / "big-link")
    os.link(src / "a0" / "0-big.bin", src / "a2" / "big-link")
    (src / "a3" / "first").write_bytes(os.urandom(5000))
    os.link(src / "a3" / "first", src / "a1" / "b0" / "second")
    return n + 1 + 2 + 2


def test_deep_tree_with_hard_links_round_trips(cairn, tmp_path):
    src = tmp_path / "src"
    nfiles = make_tree(src)
    summary, err = cairn.backup(src, extra=["--threads", "2"])
    assert summary["partial"] is False, err
    assert summary["files_new"] == nfiles
    target = tmp_path / "t"
    target.mkdir()
    rc, _, err = cairn.restore("latest", target)
    assert rc == 0, err
    # content, modes, owners, times, and hard-link groups (same inode) back
    assert_same_tree(src, restored_path(target, src))


def test_file_failing_midway(cairn, tmp_path, shim):
    src = tmp_path / "src"
    nfiles = make_tree(src)
    doomed = src / "a1" / "b2" / "fail-midway.bin"
    write_random(doomed, 8 << 20)
    env = dict(os.environ, LD_PRELOAD=str(shim))
    summary, err = cairn.backup(src, extra=["--threads", "2"], expect=EXIT_PARTIAL, env=env)
    assert summary["partial"] is True
    assert [e["path"] for e in summary["errors"]] == [str(doomed)], summary["errors"]
    assert "Input/output error" in summary["errors"][0]["reason"], summary["errors"]  # failed reading, not opening
    assert str(doomed) in err
    snaps = cairn.snapshots()
    assert snaps[-1]["partial"] is True
    target = tmp_path / "t"
    target.mkdir()
    rc, _, err = cairn.restore("latest", target)
    assert rc == 0, err
    dst = restored_path(target, src)
    # The failed file is left out, never stored with the part that was read;
    # everything else, in its directory and elsewhere, comes back exactly.
    assert not os.path.lexists(os.path.join(dst, b"a1/b2/fail-midway.bin"))
    st = os.stat(doomed.parent)
    doomed.unlink()
    os.utime(doomed.parent, ns=(st.st_atime_ns, st.st_mtime_ns))  # as it was when backed up
    assert_same_tree(src, dst)

    # The next backup (no shim) reads the file again and is complete; the rest is unchanged.
    write_random(doomed, 8 << 20)
    summary, err = cairn.backup(src)
    assert summary["partial"] is False, err
    assert summary["files_unmodified"] == nfiles
    assert summary["files_new"] == 1
    target2 = tmp_path / "t2"
    target2.mkdir()
    rc, _, err = cairn.restore("latest", target2)
    assert rc == 0, err
    assert_same_tree(src, restored_path(target2, src))
