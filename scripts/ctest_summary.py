#!/usr/bin/env python3
"""Prints what a test run cost: each stage's time, and the slowest tests of
each ctest run, from the JUnit files ctest wrote (--output-junit).

    ctest_summary.py STAGES_FILE [NAME=JUNIT_XML ...]
    ctest_summary.py --costs JUNIT_XML > tests/ctest-costs.txt

STAGES_FILE holds one line per stage, "<name> <seconds>", written by
scripts/test.sh as each stage ends, and a last "wall-clock <seconds>" line
(stages may overlap: the sanitizer build runs beside the normal tests). Called by scripts/test.sh at the end of
every run (also when a stage failed), so the budget is in front of whoever
reads the log (docs/testing.md § Time budget)."""
import sys
import xml.etree.ElementTree as ET

SLOWEST = 15


def stages(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                w = line.split()
                if len(w) == 2:
                    out.append((w[0], int(w[1])))
    except OSError:
        pass
    return out


def tests(path):
    """[(seconds, name, status)] of every test case in the JUnit file."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return []
    out = []
    for tc in root.iter("testcase"):
        status = tc.get("status", "run")
        if tc.find("failure") is not None:
            status = "failed"
        elif tc.find("skipped") is not None:
            status = "skipped"
        out.append((float(tc.get("time", "0") or 0), tc.get("name", "?"), status))
    return out


def costs(path):
    """The integration tests' times, for tests/CMakeLists.txt's COST (longest first)."""
    rows = [r for r in tests(path) if r[1].startswith("integration.") and r[2] != "skipped"]
    if not rows:
        print(f"no integration tests in {path}", file=sys.stderr)
        return 1
    print("# Seconds each integration test took in a measured run of scripts/test.sh's normal stage")
    print("# (scripts/ctest_summary.py --costs build/ctest-junit.xml): ctest starts the longest first.")
    for secs, name, _ in sorted(rows, key=lambda r: r[1]):
        print(f"{name} {max(secs, 0.1):.1f}")
    return 0


def main(argv):
    if len(argv) == 3 and argv[1] == "--costs":
        return costs(argv[2])
    if len(argv) < 2:
        print(__doc__)
        return 2
    st = stages(argv[1])
    print("\n==== time budget (docs/testing.md § Time budget)")
    print(f"{'stage':<26} {'seconds':>8} {'minutes':>8}")
    wall = None
    for name, secs in st:
        if name == "wall-clock":
            wall = secs
            continue
        print(f"{name:<26} {secs:>8} {secs / 60:>8.1f}")
    if wall is not None:
        print(f"{'total (wall clock)':<26} {wall:>8} {wall / 60:>8.1f}")
    total = total_failed = 0
    for arg in argv[2:]:
        name, _, path = arg.partition("=")
        rows = tests(path)
        if not rows:
            continue
        failed = [r for r in rows if r[2] == "failed"]
        total, total_failed = total + len(rows), total_failed + len(failed)
        print(f"\n{name}: {len(rows)} tests, {len(failed)} failed, {sum(r[0] for r in rows):.0f} s of test time; "
              f"the {min(SLOWEST, len(rows))} slowest:")
        for secs, test, status in sorted(rows, reverse=True)[:SLOWEST]:
            print(f"  {secs:7.1f} s  {test}{'' if status in ('run', 'passed') else '  (' + status + ')'}")
    if len(argv) > 3:
        print(f"\nall stages: {total} tests run, {total_failed} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
