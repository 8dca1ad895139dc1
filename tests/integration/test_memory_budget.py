"""--memory-budget on a metadata-heavy repository (docs/operations.md § What
the budget cannot bound): what grows with the repository (its index, its
largest tree) is counted once the index is loaded, a budget the option gives
below it is refused before anything else is read, naming what the repository
needs, and a budget at or above it is honoured: the command's peak RSS stays
under it.

Peak RSS is the kernel's for that one command (ru_maxrss from wait4), not a
speed: this is the promise docs/operations.md makes, not a benchmark (those
are bench/repo/metadata_rss.py's). The corpus is one directory of 30,000
small files: its tree is ~9 MB of text, ~2 MB stored. The budgets leave
a margin of 30% or more over what the commands peak at on it (check and ls
~52 MiB: opening the repository, the key derivation; an unchanged backup
~55 MiB)."""
import os
import pathlib
import re
import subprocess

import pytest

from conftest import BIN

FILES = 30_000


def run_measured(cairn, *args, tmp):
    """(rc, stdout, stderr, peak RSS in MiB) of one cairnctl command."""
    out, err = tmp / "out", tmp / "err"
    with open(out, "wb") as o, open(err, "wb") as e:
        p = subprocess.Popen(cairn.argv(*args), stdout=o, stderr=e)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, out.read_text(errors="replace"), err.read_text(errors="replace"), usage.ru_maxrss / 1024


@pytest.fixture
def flat(tmp_path):
    d = tmp_path / "flat"
    d.mkdir()
    for i in range(FILES):
        (d / f"file-{i:07d}.txt").write_text(str(i))
    return d


def test_a_budget_below_what_the_repository_needs_is_refused_and_one_above_is_honoured(cairn, flat, tmp_path):
    if b"__asan_init" in pathlib.Path(BIN).read_bytes():
        pytest.skip("peak RSS under AddressSanitizer is its shadow memory's, not cairn's")
    rc, out, err, peak = run_measured(cairn, "backup", "--quiet", "--memory-budget", "96M", flat, tmp=tmp_path)
    assert rc == 0, err[-3000:]
    assert peak <= 96, f"first backup peaked at {peak:.1f} MiB under --memory-budget 96M"

    # A backup reads the parent's largest tree and may write one as large: with
    # this index it needs more than the least a backup takes (96M).
    rc, out, err, _ = run_measured(cairn, "backup", "--quiet", "--memory-budget", "96M", flat, tmp=tmp_path)
    assert rc == 1, f"exited {rc}: {err[-2000:]}"
    assert "--memory-budget 96M is below what this repository needs (about " in err, err
    m = re.search(r"its index holds ([0-9,]+) blobs at ~\d+ bytes each", err)
    assert m and FILES < int(m[1].replace(",", "")) < FILES + 20, err  # the files' blobs and the trees'
    m = re.search(r"its largest tree, (\d+) MiB of text stored in (\d+) MiB", err)
    assert m and 7 <= int(m[1]) <= 10 and int(m[2]) < int(m[1]), err
    least = err.split("give at least ")[1].split(" ")[0]
    assert least.endswith("M") and 96 < int(least[:-1]) <= 128, err
    assert err.rstrip().endswith("or leave it unset"), err
    assert len(cairn.snapshots()) == 1  # refused before anything was written

    rc, out, err, peak = run_measured(cairn, "backup", "--quiet", "--memory-budget", least, flat, tmp=tmp_path)
    assert rc == 0, err[-3000:]
    assert peak <= int(least[:-1]), f"unchanged backup peaked at {peak:.1f} MiB under --memory-budget {least}"
    assert len(cairn.snapshots()) == 2

    # check and ls need the repository's opening (the key derivation) and its
    # index and largest tree read: less than a backup, so they take less.
    rc, out, err, _ = run_measured(cairn, "check", "--memory-budget", "40M", tmp=tmp_path)
    assert rc == 1 and "--memory-budget 40M is below the minimum of 56 MiB (opening a repository" in err, err
    for args in (("check",), ("check", "--read-data"), ("ls", "latest")):
        rc, out, err, peak = run_measured(cairn, *args, "--memory-budget", "80M", tmp=tmp_path)
        assert rc == 0, f"{args}: {err[-3000:]}"
        assert peak <= 80, f"{' '.join(args)} peaked at {peak:.1f} MiB under --memory-budget 80M"
    assert out.count("\n") >= FILES  # ls listed every file
