#!/usr/bin/env python3
"""Runs a build's tests one ctest call each, a few at a time, until told to
stop: the lane scripts/test.sh runs the sanitizer build's integration tests
in beside the normal stage, once that build and its unit tests are done and
the normal stage's tests still run (docs/testing.md § Time budget).

    ctest_lane.py BUILD_DIR WORK_DIR JOBS -- CTEST_SELECTION_ARGS...
    ctest_lane.py --rest BUILD_DIR WORK_DIR -- CTEST_SELECTION_ARGS...

Tests are taken longest first (their COST), a test of PROCESSORS > 1 alone.
When WORK_DIR/stop exists no further test starts: the numbers of those that
did start are written to WORK_DIR/started (ctest's -I form, "0,0,0,N,..."),
then WORK_DIR/stopped is made, and the lane waits for the running ones, at nice 0 from then on (they run beside
the sanitizer stage's own tests, which run at that priority). The
rest of the selection is then for the caller to run (ctest -I with the
complement, which --rest prints: "" when nothing is left). The tests' results go to WORK_DIR/junit.xml
(one JUnit file); each failed test's output is printed. Exit 0 when every
test it ran passed, 1 otherwise. The environment (the sanitizers' options)
is the caller's."""
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET


def listing(build, args):
    out = subprocess.run(["ctest", "--test-dir", build, "-N", "--show-only=json-v1", *args], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out).get("tests", [])


def prop(test, name, default):
    for p in test.get("properties", []):
        if p.get("name") == name:
            return p.get("value", default)
    return default


def rest(build, work, selection):
    """The -I spec of the selection's tests the lane did not start ("" when none)."""
    with open(os.path.join(work, "started")) as f:
        started = {int(x) for x in f.read().strip().split(",")[3:] if x}
    number = {t["name"]: i + 1 for i, t in enumerate(listing(build, []))}
    left = sorted(number[t["name"]] for t in listing(build, selection) if number[t["name"]] not in started)
    print(",".join(["0,0,0"] + [str(n) for n in left]) if left else "")
    return 0


def renice_tree(root, value):
    """Sets the nice value of root's descendants (the running tests' ctest,
    pytest and daemons): started at nice 10 beside the normal stage, they run
    beside the sanitizer stage's own tests at its priority."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        try:
            os.setpriority(os.PRIO_PROCESS, pid, value)
        except OSError:
            pass
        todo.extend(children.get(pid, []))


def main(argv):
    if len(argv) >= 5 and argv[1] == "--rest" and argv[4] == "--":
        return rest(argv[2], argv[3], argv[5:])
    if len(argv) < 5 or argv[4] != "--":
        print(__doc__)
        return 2
    build, work, jobs, selection = argv[1], argv[2], max(1, int(argv[3])), argv[5:]
    os.makedirs(work, exist_ok=True)
    number = {t["name"]: i + 1 for i, t in enumerate(listing(build, []))}  # -I numbers count every test
    chosen = listing(build, selection)
    queue = sorted(chosen, key=lambda t: -float(prop(t, "COST", 0) or 0))
    running, started, failed, cases = {}, [], [], []

    def reap(block):
        for n, (proc, slots, log) in list(running.items()):
            if block:
                proc.wait()
            if proc.poll() is None:
                continue
            del running[n]
            try:
                cases.extend(ET.parse(os.path.join(work, f"{n}.xml")).getroot().iter("testcase"))
            except (OSError, ET.ParseError):
                pass
            if proc.returncode != 0:
                failed.append(n)
                with open(log) as f:
                    sys.stdout.write(f.read())

    stop = os.path.join(work, "stop")
    while queue and not os.path.exists(stop):
        reap(False)
        used = sum(s for _, s, _ in running.values())
        t = queue[0]
        slots = min(jobs, max(1, int(prop(t, "PROCESSORS", 1) or 1)))
        if used + slots > jobs:
            time.sleep(0.2)
            continue
        queue.pop(0)
        n = number[t["name"]]
        started.append(n)
        log = os.path.join(work, f"{n}.log")
        with open(log, "w") as out:
            proc = subprocess.Popen(["ctest", "--test-dir", build, "-I", f"0,0,0,{n}", "--output-on-failure",
                                     "--timeout", "600", "--output-junit", os.path.join(work, f"{n}.xml")],
                                    stdout=out, stderr=subprocess.STDOUT)
        running[n] = (proc, slots, log)
    while not os.path.exists(stop) and running:  # the selection done before the stop
        reap(False)
        time.sleep(0.2)
    with open(os.path.join(work, "started"), "w") as f:
        f.write(",".join(["0,0,0"] + [str(n) for n in started]) + "\n")
    open(os.path.join(work, "stopped"), "w").close()
    if running:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, 0)
        except OSError:
            pass
        renice_tree(os.getpid(), 0)
    reap(True)

    suite = ET.Element("testsuite", name="lane", tests=str(len(cases)), failures=str(len(failed)))
    suite.extend(cases)
    ET.ElementTree(suite).write(os.path.join(work, "junit.xml"))
    print(f"{len(started)} tests run beside the normal stage, {len(failed)} failed; "
          f"{len(chosen) - len(started)} left for the sanitizer stage")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
