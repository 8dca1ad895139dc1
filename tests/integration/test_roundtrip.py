"""Back up trees and streams, restore them, and compare everything a user would notice."""
import json
import os
import random

from conftest import assert_same_tree, json_lines, restored_path, write_random

PAST_NS = 1_500_000_000_123_456_789  # 2017, with nanoseconds


def make_every_kind(src):
    """A tree with every file kind the repository must keep. Returns bytes paths of note."""
    b = os.fsencode(src)
    os.makedirs(os.path.join(b, b"d1/d2/d3"))
    open(os.path.join(b, b"empty"), "wb").close()
    with open(os.path.join(b, b"small.txt"), "w") as f:
        f.write("hello, cairn\n")
    write_random(os.path.join(b, b"random.bin"), 20 << 20)
    # A page-structured file: 4 KiB pages with a header each, like a database.
    rng = random.Random(7)
    with open(os.path.join(b, b"pages.db"), "wb") as f:
        for i in range(512):
            page = i.to_bytes(4, "little") + b"PAGE" + rng.randbytes(4096 - 8)
            f.write(page)
    with open(os.path.join(b, b"d1/d2/d3/deep.txt"), "w") as f:
        f.write("deep\n" * 1000)
    os.symlink(b"d1/d2/d3/deep.txt", os.path.join(b, b"rel-link"))
    os.symlink(os.path.join(b, b"small.txt"), os.path.join(b, b"abs-link"))
    os.symlink(b"does/not/exist", os.path.join(b, b"dangling"))
    with open(os.path.join(b, b"hard1"), "w") as f:
        f.write("linked content\n" * 100)
    os.link(os.path.join(b, b"hard1"), os.path.join(b, b"d1/hard2"))
    sparse = os.path.join(b, b"sparse.img")
    with open(sparse, "wb") as f:
        f.truncate(200 << 20)
        f.seek(4096)
        f.write(b"beginning")
        f.seek(100 << 20)
        f.write(b"middle" * 100)
        f.seek((200 << 20) - 10)
        f.write(b"the end!!\n")
    os.mkfifo(os.path.join(b, b"fifo"))
    odd = os.path.join(b, b"bad-\xff\xfe name\nwith newline")
    with open(odd, "wb") as f:
        f.write(b"non-utf8 name\n")
    with open(os.path.join(b, b"private"), "w") as f:
        f.write("secret\n")
    with open(os.path.join(b, b"script.sh"), "w") as f:
        f.write("#!/bin/sh\necho hi\n")
    with open(os.path.join(b, b"nothing-allowed"), "w") as f:
        f.write("mode 0000\n")
    os.mkdir(os.path.join(b, b"setgid-dir"))
    with open(os.path.join(b, b"setgid-dir/inside"), "w") as f:
        f.write("x\n")
    with open(os.path.join(b, b"owned"), "w") as f:
        f.write("owned by 1234:5678\n")
    os.setxattr(os.path.join(b, b"small.txt"), "user.cairn.test", b"xattr value \x00\xff")
    os.setxattr(os.path.join(b, b"d1"), "user.dir", b"on a directory")
    # Owners first: chown may clear set-id bits.
    os.chown(os.path.join(b, b"owned"), 1234, 5678)
    os.chown(os.path.join(b, b"setgid-dir"), 1234, 5678)
    os.lchown(os.path.join(b, b"rel-link"), 1234, 5678)
    os.chmod(os.path.join(b, b"private"), 0o600)
    os.chmod(os.path.join(b, b"script.sh"), 0o755)
    os.chmod(os.path.join(b, b"nothing-allowed"), 0o000)
    os.chmod(os.path.join(b, b"setgid-dir"), 0o2775)
    os.chmod(os.path.join(b, b"fifo"), 0o640)
    # mtimes last, deepest first, so creating entries does not touch them again.
    for dp, dns, fns in os.walk(b, topdown=False):
        for i, n in enumerate(sorted(fns + dns)):
            os.utime(os.path.join(dp, n), ns=(PAST_NS, PAST_NS + i * 1_000_000_007), follow_symlinks=False)
        os.utime(dp, ns=(PAST_NS, PAST_NS - 17))
    return {"sparse": sparse, "odd": odd}


def test_round_trip_every_file_kind(cairn, tmp_path):
    src = tmp_path / "src"
    notes = make_every_kind(src)
    summary, err = cairn.backup(src)
    assert summary["partial"] is False, err
    target = tmp_path / "restore"
    target.mkdir()
    rc, out, err = cairn.restore("latest", target)
    assert rc == 0, f"restore exited {rc}: {err}"
    dst = restored_path(target, src)
    assert_same_tree(src, dst)
    # The sparse file is still sparse after the restore.
    sp = os.path.join(dst, os.path.basename(notes["sparse"]))
    st = os.stat(sp)
    assert st.st_size == 200 << 20
    assert st.st_blocks * 512 < 8 << 20, f"restored sparse file uses {st.st_blocks * 512} bytes on disk"
    # ls lists every path, including the one that is not UTF-8 (shown somehow).
    out, _ = cairn.ok("ls", "latest")
    for name in ["small.txt", "d1/d2/d3/deep.txt", "sparse.img", "rel-link", "fifo", "setgid-dir/inside"]:
        assert f"{src}/{name}" in out, f"ls does not list {name}"
    assert "with newline" in out


def test_stdin_round_trip(cairn, tmp_path):
    data = os.urandom(30 << 20)
    summary, err = cairn.backup(extra=("--stdin", "--stdin-name", "dump.sql"), input=data)
    assert summary["partial"] is False
    snaps = cairn.snapshots()
    assert len(snaps) == 1 and snaps[0]["paths"] == ["stdin:dump.sql"], snaps
    out, _ = cairn.ok("ls", snaps[0]["id"])
    assert "dump.sql" in out
    target = tmp_path / "restore"
    target.mkdir()
    rc, out, err = cairn.restore("latest", target)
    assert rc == 0, err
    found = [os.path.join(dp, f) for dp, _, fns in os.walk(target) for f in fns]
    assert [os.path.basename(f) for f in found] == ["dump.sql"], found
    with open(found[0], "rb") as f:
        assert f.read() == data


def test_stdin_needs_a_name(cairn):
    rc, out, err = cairn("backup", "--stdin", input=b"x")
    assert rc == 1 and "--stdin-name" in err


def test_snapshots_json_and_ls(cairn, tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "one.txt").write_text("one\n")
    (b / "sub").mkdir()
    (b / "sub" / "two.txt").write_text("two\n")
    s1, _ = cairn.backup(a, extra=("--tag", "daily", "--tag", "web"))
    s2, _ = cairn.backup(a, b)
    snaps = cairn.snapshots()
    assert [s["id"] for s in snaps] == [s1["snapshot_id"], s2["snapshot_id"]]
    assert snaps[0]["paths"] == [str(a)]
    assert sorted(snaps[0]["tags"]) == ["daily", "web"]
    assert snaps[1]["paths"] == sorted([str(a), str(b)])
    assert snaps[1]["tags"] == []
    assert all(s["partial"] is False for s in snaps)
    # The plain listing shows the short ids and the tags too.
    out, _ = cairn.ok("snapshots")
    assert s1["snapshot_id"][:8] in out and s2["snapshot_id"][:8] in out and "daily" in out
    out, _ = cairn.ok("ls", s2["snapshot_id"][:8])
    assert f"{a}/one.txt" in out and f"{b}/sub/two.txt" in out and f"{b}/sub" in out
    out, _ = cairn.ok("ls", "--json", s1["snapshot_id"])
    paths = {j["path"] for j in json_lines(out)}
    assert f"{a}/one.txt" in paths and f"{b}/sub/two.txt" not in paths


def test_restore_include_glob(cairn, tmp_path):
    src = tmp_path / "src"
    (src / "logs").mkdir(parents=True)
    (src / "logs" / "a.log").write_text("a\n")
    (src / "keep.txt").write_text("keep\n")
    cairn.backup(src)
    target = tmp_path / "t"
    target.mkdir()
    rc, out, err = cairn.restore("latest", target, extra=("--include", "*.log"))
    assert rc == 0, err
    files = [f for _, _, fns in os.walk(target) for f in fns]
    assert files == ["a.log"], files


def test_tag_before_paths(cairn, tmp_path):
    """The documented usage: backup [--tag T] PATH... (the tag takes one value)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("f\n")
    rc, out, err = cairn("backup", "--tag", "daily", "--tag", "web", src)
    assert rc == 0, f"'backup --tag daily --tag web PATH' failed: {err}"
    rc, out, err = cairn("backup", "--tag=weekly", src)
    assert rc == 0, f"'backup --tag=weekly PATH' failed: {err}"
    snaps = cairn.snapshots()
    assert [sorted(s["tags"]) for s in snaps] == [["daily", "web"], ["weekly"]]
    assert all(s["paths"] == [str(src)] for s in snaps)
