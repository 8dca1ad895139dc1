"""Trees as deep as the one depth limit of every command (2,048 levels), with paths far
longer than PATH_MAX, back up, check and restore byte for byte; a deeper tree gets a
clear error at backup time (exit 3, snapshot partial). Paths here are too long for
path-based calls, so every helper works through directory descriptors."""
import hashlib
import os
import stat
import subprocess

import pytest

from conftest import json_lines, restored_path

DEPTH_LIMIT = 2048  # kMaxTreeDepth in common/repo/walk.h


def remove_deep(path):
    """rm removes a tree of any depth (shutil.rmtree recurses per level)."""
    subprocess.run(["rm", "-rf", os.fspath(path)], check=False)


def make_chain(root, levels, name_of, file_every=0, seed=1):
    """levels nested directories below root, built through descriptors; a file every
    file_every levels and one at the bottom. Returns the total length of the deepest path."""
    os.makedirs(root, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    length = len(os.fsencode(root))
    try:
        for i in range(levels):
            if file_every and i % file_every == 0:
                with open(os.open(f"file-{i}", os.O_WRONLY | os.O_CREAT, 0o640, dir_fd=fd), "wb") as f:
                    f.write(hashlib.sha256(f"{seed}-{i}".encode()).digest() * (i + 1))
            name = name_of(i)
            os.mkdir(name, dir_fd=fd)
            length += 1 + len(name)
            nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        with open(os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "wb") as f:
            f.write(b"the bottom of the tree\n" * 100)
        os.symlink("bottom.txt", "link", dir_fd=fd)
    finally:
        os.close(fd)
    return length


def fd_tree_state(root):
    """Every entry below root (type, mode, owner, mtime, content digest, link target),
    keyed by its tuple of names, read through directory descriptors without recursion."""
    state = {}
    stack = [(os.open(root, os.O_RDONLY | os.O_DIRECTORY), ())]
    while stack:
        fd, rel = stack.pop()
        try:
            for name in os.listdir(fd):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                key = rel + (name,)
                e = {"type": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode), "owner": (st.st_uid, st.st_gid)}
                if stat.S_ISDIR(st.st_mode):
                    e["mtime_ns"] = st.st_mtime_ns
                    stack.append((os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd), key))
                elif stat.S_ISREG(st.st_mode):
                    e["mtime_ns"] = st.st_mtime_ns
                    with open(os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd), "rb") as f:
                        e["sha256"] = hashlib.sha256(f.read()).hexdigest()
                elif stat.S_ISLNK(st.st_mode):
                    e["target"] = os.readlink(name, dir_fd=fd)
                state[key] = e
        finally:
            os.close(fd)
    return state


def test_tree_1500_deep_with_long_names_round_trips(cairn, tmp_path):
    src, target = tmp_path / "src", tmp_path / "target"
    try:
        longest = make_chain(src, 1500, lambda i: f"{i:04d}-" + "n" * 195, file_every=100)
        assert longest > 250_000  # far beyond PATH_MAX (4096)
        summary, err = cairn.backup(src)
        assert summary["partial"] is False, err
        assert summary["errors"] in (0, [], None), err
        cairn.ok("check")
        rc, out, err = cairn.restore("latest", target)
        assert rc == 0, err
        restored = restored_path(target, src)
        want, got = fd_tree_state(src), fd_tree_state(restored)
        assert len(want) == 1500 + 15 + 2
        assert got == want
    finally:
        remove_deep(src)
        remove_deep(target)


def test_tree_deeper_than_the_limit_is_refused_at_backup_time(cairn, tmp_path):
    src, target = tmp_path / "src", tmp_path / "target"
    try:
        make_chain(src, DEPTH_LIMIT + 10, lambda i: "d")
        rc, out, err = cairn("backup", "--json", src)
        assert rc == 3, err  # the snapshot is written, partial
        summary = [j for j in json_lines(out) if j.get("message_type") == "summary"][-1]
        assert summary["partial"] is True
        assert f"deeper than {DEPTH_LIMIT} levels" in err, err
        assert "recorded empty" in err, err
        # What was recorded reads back everywhere, with no error.
        cairn.ok("check")
        out, _ = cairn.ok("ls", "latest")
        assert out.count("\n") > DEPTH_LIMIT - 20
        rc, _, err = cairn.restore("latest", target)
        assert rc == 0, err
    finally:
        remove_deep(src)
        remove_deep(target)
