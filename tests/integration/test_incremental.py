"""A second backup only reads what changed; every snapshot still restores its own tree."""
import os
import random
import shutil

from conftest import assert_same_tree, restored_path, write_random


def make_tree(src):
    rng = random.Random(11)
    (src / "logs").mkdir(parents=True)
    (src / "db").mkdir()
    write_random(src / "logs" / "app.log", 12 << 20)
    with open(src / "db" / "data.db", "wb") as f:
        for i in range(2048):  # 8 MiB of 4 KiB pages
            f.write(i.to_bytes(8, "little") + rng.randbytes(4088))
    for i in range(20):
        (src / f"note{i}.txt").write_text(f"note {i}\n" * (i + 1))
    write_random(src / "blob.bin", 3 << 20)
    return 2 + 20 + 1


def test_incremental_reads_only_changes(cairn, tmp_path):
    src = tmp_path / "src"
    nfiles = make_tree(src)
    first, _ = cairn.backup(src)
    assert first["files_new"] == nfiles
    old = tmp_path / "old-copy"
    shutil.copytree(src, old, symlinks=True)

    second, _ = cairn.backup(src)
    assert second["files_unmodified"] == nfiles, second
    assert second["files_new"] == 0 and second["files_changed"] == 0
    assert second["data_added"] < 64 << 10, f"an unchanged backup added {second['data_added']} bytes"

    # Append 1 MiB to the log, rewrite one page in the middle of the database.
    with open(src / "logs" / "app.log", "ab") as f:
        f.write(os.urandom(1 << 20))
    with open(src / "db" / "data.db", "r+b") as f:
        f.seek(1000 * 4096)
        f.write(b"\x01" * 4096)
    third, _ = cairn.backup(src)
    assert third["files_changed"] == 2, third
    assert third["files_unmodified"] == nfiles - 2
    # The change is about 1 MiB plus a page; allow chunk-boundary slack, far below the 23 MiB tree.
    assert third["data_added_raw"] < 6 << 20, f"after a small change {third['data_added_raw']} bytes were stored"

    t_new = tmp_path / "r-new"
    t_old = tmp_path / "r-old"
    t_new.mkdir()
    t_old.mkdir()
    rc, _, err = cairn.restore(third["snapshot_id"], t_new)
    assert rc == 0, err
    rc, _, err = cairn.restore(first["snapshot_id"], t_old)
    assert rc == 0, err
    assert_same_tree(src, restored_path(t_new, src))
    # The copy has other mtimes on directories; compare content, modes and owners.
    assert_same_tree(old, restored_path(t_old, src), times=False)
