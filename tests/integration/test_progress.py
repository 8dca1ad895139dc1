"""--json progress: status lines a program can follow, then one summary line."""
from conftest import json_lines, write_random


def test_json_progress_lines(cairn, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        write_random(src / f"f{i}.bin", 40 << 20)
    (src / "small.txt").write_text("small\n")
    rc, out, err = cairn("backup", "--json", src)
    assert rc == 0, err
    lines = json_lines(out)
    assert len(lines) == len(out.strip().splitlines()), "stdout holds lines that are not JSON"
    assert lines[-1]["message_type"] == "summary"
    status = [j for j in lines if j["message_type"] == "status"]
    assert len(status) >= 2, f"only {len(status)} status lines"
    done = [j["bytes_done"] for j in status]
    assert done == sorted(done), f"bytes_done went backwards: {done}"
    assert done[-1] > done[0]
    last = status[-1]
    assert last["bytes_done"] == last["bytes_total"] == (160 << 20) + 6, last
    assert last["files_done"] == last["files_total"] == 5, last
    assert lines.index(last) == len(lines) - 2, "the summary does not follow the last status line"
    assert lines[-1]["bytes_total"] == (160 << 20) + 6
    assert all(isinstance(j.get("phase"), str) for j in status)
