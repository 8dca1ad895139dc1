"""forget/prune remove what is no longer kept, and --dry-run changes nothing."""
import os

from conftest import assert_same_tree, dir_bytes, dir_listing, restored_path, write_random


def three_snapshots(cairn, src):
    src.mkdir()
    (src / "keep.txt").write_text("always here\n")
    ids = []
    for i in range(3):
        write_random(src / "changing.bin", 4 << 20)  # new data each time
        s, _ = cairn.backup(src)
        ids.append(s["snapshot_id"])
    return ids


def test_forget_keep_last_and_prune(cairn, tmp_path):
    src = tmp_path / "src"
    ids = three_snapshots(cairn, src)

    before = dir_listing(cairn.repo)
    rc, out, err = cairn("forget", "--keep-last", "1", "--prune", "--dry-run")
    assert rc == 0, err
    assert dir_listing(cairn.repo) == before, "forget --dry-run changed the repository"
    rc, out, err = cairn("prune", "--dry-run")
    assert rc == 0, err
    assert dir_listing(cairn.repo) == before, "prune --dry-run changed the repository"
    assert [s["id"] for s in cairn.snapshots()] == ids

    size_before = dir_bytes(cairn.repo)
    rc, out, err = cairn("forget", "--keep-last", "1", "--prune")
    assert rc == 0, err
    assert [s["id"] for s in cairn.snapshots()] == [ids[-1]]
    size_after = dir_bytes(cairn.repo)
    assert size_after < size_before - (6 << 20), f"prune freed too little: {size_before} -> {size_after} bytes"
    rc, out, err = cairn("check", "--read-data")
    assert rc == 0, f"check --read-data after prune:\n{out}{err}"
    target = tmp_path / "t"
    target.mkdir()
    rc, out, err = cairn.restore("latest", target)
    assert rc == 0, err
    assert_same_tree(src, restored_path(target, src))


def test_forget_named_snapshot_then_prune(cairn, tmp_path):
    src = tmp_path / "src"
    ids = three_snapshots(cairn, src)
    cairn.ok("forget", ids[1][:8])
    assert [s["id"] for s in cairn.snapshots()] == [ids[0], ids[2]]
    size_before = dir_bytes(cairn.repo)
    cairn.ok("prune")
    assert dir_bytes(cairn.repo) < size_before
    rc, out, err = cairn("check", "--read-data")
    assert rc == 0, f"{out}{err}"
    target = tmp_path / "t"
    target.mkdir()
    rc, out, err = cairn.restore(ids[0], target)
    assert rc == 0, err
    assert os.path.getsize(os.path.join(restored_path(target, src), b"changing.bin")) == 4 << 20
