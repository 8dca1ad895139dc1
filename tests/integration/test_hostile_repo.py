"""A damaged or read-only repository, and sources that change while they are read,
seen from `cairnctl` as a user would: damage reads as damage (exit 13, the object
named), `latest` never silently stands in an older snapshot for a damaged one,
read-only repositories can be checked and restored, and a snapshot agrees with
itself about a file that grew or shrank while it was backed up."""
import os
import shutil
import subprocess

import pytest

from conftest import EXIT_PARTIAL, EXIT_WRONG_KEY, assert_same_tree, restored_path, write_random, write_secret

EXIT_DAMAGED = 13


def key_slot(cairn):
    (name,) = [n for n in os.listdir(cairn.repo / "keys") if not n.startswith(".")]
    return cairn.repo / "keys" / name


def flip(path, offset, mask=0x01):
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def test_damaged_key_slot_and_config_are_damage_not_a_wrong_passphrase(cairn, tmp_path):
    slot = key_slot(cairn)
    text = slot.read_bytes()
    wrong = write_secret(tmp_path / "wrong", "not the passphrase")
    rc, _, err = cairn("snapshots", password_file=wrong)
    assert rc == EXIT_WRONG_KEY, err
    # A byte in created, hostname, username, version, the salt and the sealed key.
    for field in (b'"created"', b'"hostname"', b'"username"', b'"version"', b'"salt"', b'"data"'):
        at = text.index(field) + len(field) + 4
        flip(slot, at)
        rc, _, err = cairn("snapshots")
        assert rc == EXIT_DAMAGED, f"{field}: exit {rc}: {err}"
        assert "damaged" in err and slot.name in err, err
        slot.write_bytes(text)
    cfg = cairn.repo / "config"
    ctext = cfg.read_bytes()
    for field in (b'"created"', b'"format"', b'"version"', b'"id"', b'"sealed"', b'"checksum"'):
        at = ctext.index(field) + len(field) + 4
        flip(cfg, at)
        rc, _, err = cairn("snapshots")
        assert rc == EXIT_DAMAGED, f"config {field}: exit {rc}: {err}"
        assert "config" in err and "damaged" in err, err
        cfg.write_bytes(ctext)
    cairn.ok("snapshots")


def test_latest_refuses_a_damaged_newest_snapshot(cairn, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("old\n")
    old, _ = cairn.backup(src)
    (src / "f").write_text("new\n")
    new, _ = cairn.backup(src)
    newest = cairn.repo / "snapshots" / new["snapshot_id"]
    flip(newest, newest.stat().st_size // 2)

    target = tmp_path / "t"
    target.mkdir()
    rc, _, err = cairn.restore("latest", target)
    assert rc == EXIT_DAMAGED, err
    assert new["snapshot_id"][:8] in err and "--skip-damaged" in err, err
    assert os.listdir(target) == []  # nothing restored
    rc, _, err = cairn("ls", "latest")
    assert rc == EXIT_DAMAGED, err

    # Told to, it restores the newest readable one and names what it skipped.
    rc, _, err = cairn.restore("latest", target, extra=["--skip-damaged"])
    assert rc == 0, err
    assert "skipped damaged snapshot '" + new["snapshot_id"][:8] in err, err
    with open(os.path.join(restored_path(target, src), b"f"), "rb") as f:
        assert f.read() == b"old\n"

    # `snapshots` lists the damaged one, marked, instead of hiding it.
    rc, out, err = cairn("snapshots")
    assert rc == EXIT_DAMAGED, err
    rows = [l for l in out.splitlines() if l.startswith(new["snapshot_id"][:8])]
    assert rows and "damaged" in rows[0], out
    assert any(l.startswith(old["snapshot_id"][:8]) and " ok " in l for l in out.splitlines()), out


def _can_mount(path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    p = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1"', "sh", str(path)],
                       capture_output=True)
    return p.returncode == 0


def test_read_only_repository_can_be_checked_and_restored(cairn, tmp_path):
    if not _can_mount(tmp_path):
        pytest.skip("needs root and mount namespaces for a read-only bind mount (the unit test "
                    "'locks: a read-only repository...' covers the EROFS path without them)")
    src = tmp_path / "src"
    src.mkdir()
    write_random(src / "data.bin", 3 << 20)
    (src / "note").write_text("hello\n")
    cairn.backup(src)
    target = tmp_path / "t"
    target.mkdir()
    repo = str(cairn.repo)

    def ro(*args):
        # In a private mount namespace the repository is a read-only bind mount of itself.
        argv = cairn.argv(*args)
        script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
        p = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", repo] + argv, capture_output=True, timeout=300)
        return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")

    # The mount really is read-only: a backup cannot take its lock.
    rc, _, err = ro("backup", str(src))
    assert rc != 0 and "Read-only file system" in err, err
    for args in (("check",), ("check", "--read-data"), ("restore", "latest", "--target", str(target))):
        rc, out, err = ro(*args)
        assert rc == 0, f"{args}: exit {rc}\n{out}\n{err}"
        assert "no lock was taken" in err and "Read-only file system" in err, err
    assert_same_tree(src, restored_path(target, src))
    for args in (("snapshots",), ("ls", "latest")):
        rc, out, err = ro(*args)
        assert rc == 0, f"{args}: exit {rc}\n{err}"
    assert os.listdir(cairn.repo / "locks") == []


# Changes a file whose name contains "grows" or "shrinks" on its first read past
# 1 MiB, once: appends 1 MiB, or truncates it to 1.5 MiB. Deterministic: no timing.
SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/types.h>

static int done;
static void change(int fd) {
  char link[64], path[4096];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n < 0) return;
  path[n] = 0;
  if (strstr(path, "grows")) {
    static char buf[1 << 20];
    memset(buf, 'g', sizeof buf);
    int w = open(path, O_WRONLY | O_APPEND);
    if (w >= 0) { if (write(w, buf, sizeof buf) < 0) {} close(w); }
    done = 1;
  } else if (strstr(path, "shrinks")) {
    if (truncate(path, 3 << 19) == 0) {}
    done = 1;
  }
}
typedef ssize_t (*pread_fn)(int, void*, size_t, off_t);
static ssize_t call(const char* name, int fd, void* buf, size_t n, off_t off) {
  if (!__atomic_load_n(&done, __ATOMIC_SEQ_CST) && off + (off_t)n > (1 << 20)) change(fd);
  pread_fn real = (pread_fn)dlsym(RTLD_NEXT, name);
  return real(fd, buf, n, off);
}
ssize_t pread(int fd, void* buf, size_t n, off_t off) { return call("pread", fd, buf, n, off); }
ssize_t pread64(int fd, void* buf, size_t n, off_t off) { return call("pread64", fd, buf, n, off); }
"""


@pytest.fixture
def change_shim(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler for the fault-injection shim")
    c = tmp_path / "change.c"
    c.write_text(SHIM)
    so = tmp_path / "change.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(so), str(c), "-ldl"], check=True)
    return so


@pytest.mark.parametrize("name,final", [("grows.bin", (4 << 20) + (1 << 20)), ("shrinks.bin", 3 << 19)], ids=["grows", "shrinks"])
def test_file_changing_while_read_is_recorded_as_read_and_named(cairn, tmp_path, change_shim, name, final):
    src = tmp_path / "src"
    src.mkdir()
    f = src / name
    write_random(f, 4 << 20)
    (src / "steady").write_text("steady\n")
    env = dict(os.environ, LD_PRELOAD=str(change_shim))
    summary, err = cairn.backup(src, extra=["--threads", "1"], expect=EXIT_PARTIAL, env=env)
    assert os.path.getsize(f) == final  # the shim did change it
    assert summary["partial"] is True
    assert [e["path"] for e in summary["errors"]] == [str(f)], summary["errors"]
    assert "changed while it was read" in summary["errors"][0]["reason"]
    assert str(f) in err and "changed while it was read" in err, err
    # It is stored, and the warning says so (issue 32: it began "could not back up").
    assert f"stored '{f}' as it was read, but it changed while it was read" in err and "could not back up" not in err, err
    snap = cairn.snapshots()[-1]
    assert snap["partial"] is True and snap["summary"]["files_changed_during_backup"] == 1

    # The snapshot agrees with itself: the size it lists is the size restored.
    out, _ = cairn.ok("ls", "latest", "--long")
    (line,) = [l for l in out.splitlines() if l.endswith("/" + name)]
    listed = int(line.split()[4])
    target = tmp_path / "t"
    target.mkdir()
    rc, _, err = cairn.restore("latest", target)
    assert rc == 0, err
    restored = os.path.join(restored_path(target, src), name.encode())
    assert os.path.getsize(restored) == listed == final
    with open(restored, "rb") as a, open(f, "rb") as b:
        assert a.read() == b.read()  # here the read saw the whole change


def test_temporary_files_of_killed_writers_are_reported_and_pruned(cairn, tmp_path):
    """What a backup or prune killed with -9 leaves: .tmp-<pid>-<n> files (a
    partial pack, index or snapshot) that no snapshot needs. check names them
    (a warning, not an error), prune removes them, and the snapshots restore
    (issue 32: three killed backups left 19.4 MB, never removed or mentioned)."""
    src = tmp_path / "src"
    src.mkdir()
    write_random(src / "f.bin", 1 << 20)
    cairn.backup(src)
    repo = cairn.repo
    planted = {repo / "data" / "ab" / ".tmp-99999-0": os.urandom(300_000),
               repo / "index" / ".tmp-99999-1": os.urandom(1000),
               repo / "snapshots" / ".tmp-99999-2": b"{"}
    for p, data in planted.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    out, err = cairn.ok("check")
    text = out + err
    assert "3 temporary file(s), 301001 bytes, left by writes that never finished" in text, text
    out, err = cairn.ok("prune")
    assert "temporary: 3 files" in out and "removed" in out, out
    assert not [p for p in planted if p.exists()]
    out, err = cairn.ok("check")
    assert "temporary file" not in out + err, out + err
    dst = tmp_path / "dst"
    rc, out, err = cairn.restore("latest", dst)
    assert rc == 0, err
    assert_same_tree(src, restored_path(dst, src))
