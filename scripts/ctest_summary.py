#!/usr/bin/env python3
"""Prints what a test run cost: each stage's time, and the slowest tests of
each ctest run, from the JUnit files ctest wrote (--output-junit).

    ctest_summary.py STAGES_FILE [NAME=JUNIT_XML ...]

STAGES_FILE holds one line per stage, "<name> <seconds>", written by
scripts/test.sh as each stage ends. Called by scripts/test.sh at the end of
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


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    st = stages(argv[1])
    print("\n==== time budget (docs/testing.md § Time budget)")
    print(f"{'stage':<22} {'seconds':>8} {'minutes':>8}")
    for name, secs in st:
        print(f"{name:<22} {secs:>8} {secs / 60:>8.1f}")
    total = sum(s for _, s in st)
    print(f"{'total':<22} {total:>8} {total / 60:>8.1f}")
    for arg in argv[2:]:
        name, _, path = arg.partition("=")
        rows = tests(path)
        if not rows:
            continue
        failed = [r for r in rows if r[2] == "failed"]
        print(f"\n{name}: {len(rows)} tests, {len(failed)} failed, {sum(r[0] for r in rows):.0f} s of test time; "
              f"the {min(SLOWEST, len(rows))} slowest:")
        for secs, test, status in sorted(rows, reverse=True)[:SLOWEST]:
            print(f"  {secs:7.1f} s  {test}{'' if status in ('run', 'passed') else '  (' + status + ')'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
