#!/usr/bin/python3
"""
bench/kafka/run.py -- the Kafka broker driver's benchmark (issue 11), on real
Kafka 4.1 brokers (KRaft), through a real controller and agents.

Parts (--parts, any subset; they always run in this order):
  online  one broker holding --gib GiB of logs (several topics and partitions,
          random 1 KiB values): `cairnctl backup create --component kafka
          --wait` (controller + agent, a fresh repository each round) vs
          `cp -a` of the same log dir to the same disk, alternated, --runs
          rounds, medians; plus the second backup of the unchanged broker
          into the same repository (time, bytes added)
  rf3     three brokers, one topic with replication factor 3: repository
          growth of three agents backing up into ONE repository at once,
          divided by one copy (broker 1's log dir stored alone); the same with
          three concurrent `cairnctl repo backup --shared-with-replicas F`
          (no controller), and three plain concurrent `cairnctl repo backup`
          (no sharing) as the baseline

Standard library plus what tests/integration's Kafka helpers use
(python3-confluent-kafka). Run it with /usr/bin/python3. See README.md next
to this file. Progress goes to stderr; the markdown report to stdout and --out.
"""
import argparse
import importlib.util
import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types

MiB = 1 << 20
GiB = 1 << 30
HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
PARTS = ("online", "rf3")


# ----------------------------------------------------------------------------- shared code
# bench/drivers/run.py's helpers (and through it bench/repo/run.py's Runner: wall,
# CPU, peak RSS, `sync` before and after), and its pytest stand-in, which lets
# tests/integration's helpers be imported: loaded, not copied.

def _load_drivers_bench():
    spec = importlib.util.spec_from_file_location(
        "cairn_bench_drivers", os.path.join(REPO_ROOT, "bench", "drivers", "run.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


db = _load_drivers_bench()
rb = db.rb
log, loud, remove, du_bytes, md_table = rb.log, rb.loud, rb.remove, rb.du_bytes, rb.md_table
now_iso, tool_version, host_info = rb.now_iso, rb.tool_version, rb.host_info
human, f_s, median, ratio, busy_now = db.human, db.f_s, db.median, db.ratio, db.busy_now

os.environ.setdefault("CAIRN_BUILD_DIR", os.path.join(REPO_ROOT, "build"))
import cluster as itc  # noqa: E402  (tests/integration, on sys.path through bench/drivers)
import servers_kafka  # noqa: E402

# The integration tests' control plane beats every 200 ms and gives up after 5 silent beats (1 s):
# on 2 cores busy with a 2 GiB backup (and anything else) that lost the agent mid-backup
# (`agent_lost: no word from the agent for 1000 ms`). The benchmark runs with the shipped
# defaults (docs/configuration.md: heartbeat_interval_ms 2000, liveness 5).
itc.HEARTBEAT_MS, itc.LIVENESS = 2000, 5

Failed = sys.modules["pytest"].Failed if hasattr(sys.modules["pytest"], "Failed") else Exception


def f_mib(v, signed=False):
    return "-" if v is None else (("%+.1f" if signed else "%.1f") % (v / MiB))


def proc_cpu(pid):
    """CPU seconds (user+sys, all threads) process pid has used so far."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, TypeError, ValueError, IndexError):
        return None


def cpu_of(pids):
    vals = [proc_cpu(p) for p in pids if p]
    return None if not vals or any(v is None for v in vals) else sum(vals)


def alloc_bytes(path):
    """Bytes allocated on disk (st_blocks, like `du -sB1`), hard links once: Kafka
    preallocates the active segments' indexes as sparse 10 MiB files."""
    seen, total = set(), 0
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            st = os.lstat(os.path.join(root, n))
            if st.st_nlink > 1 and n in files:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def snapshot_binaries(dest):
    """Copies of the three binaries: another person may rebuild ./build while this runs.
    Returns {name: "size, mtime"} of the originals."""
    os.makedirs(dest)
    info = {}
    for attr in ("CTL", "CONTROLLER", "AGENT"):
        src = str(getattr(itc, attr))
        dst = os.path.join(dest, os.path.basename(src))
        shutil.copy2(src, dst)
        st = os.stat(src)
        info[os.path.basename(src)] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.st_mtime))
        setattr(itc, attr, __import__("pathlib").Path(dst))
    return info


def same_segments(log_dirs, prefix):
    """Segment files (<20 digits>.log) of the partitions `prefix`-N present on every broker with
    the same base offset and size (the replicas rolled at the same offset: identical files),
    and the segment files in all (per broker)."""
    same = total = 0
    for name in sorted(os.listdir(log_dirs[0])):
        if not name.startswith(prefix + "-"):
            continue
        sets = []
        for d in log_dirs:
            p = os.path.join(d, name)
            sets.append({(f, os.path.getsize(os.path.join(p, f))) for f in os.listdir(p)
                         if re.fullmatch(r"\d{20}\.log", f)} if os.path.isdir(p) else set())
        same += len(set.intersection(*sets))
        total += len(sets[0])
    return same, total


def segments_of(log_dir):
    """(segment files, bytes in segment files, partition dirs) of a log dir."""
    n, b, parts = 0, 0, 0
    for name in os.listdir(log_dir):
        p = os.path.join(log_dir, name)
        if not os.path.isdir(p):
            continue
        parts += 1
        for f in os.listdir(p):
            if re.fullmatch(r"\d{20}\.log", f):
                n += 1
                b += os.path.getsize(os.path.join(p, f))
    return n, b, parts


AGENT_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}) (\w+): (.*)$")


def agent_log_lines(path, start_offset=0):
    try:
        with open(path, "rb") as f:
            f.seek(start_offset)
            return f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []


def agent_task_durations(lines):
    """{task_id: seconds} from the agent's own log: 'task X: backup ... starts' to 'task X: <outcome>'."""
    start, out = {}, {}
    for line in lines:
        m = AGENT_LINE.match(line)
        if not m:
            continue
        t = time.mktime(time.strptime(m.group(1)[:19], "%Y-%m-%dT%H:%M:%S")) + int(m.group(1)[20:]) / 1000
        msg = m.group(3)
        mm = re.match(r"task '([^']+)': (?:backup|restore) of component '[^']+' starts", msg)
        if mm:
            start[mm.group(1)] = t
            continue
        mm = re.match(r"task '([^']+)': (succeeded|partial|failed) \(", msg)
        if mm and mm.group(1) in start:
            out[mm.group(1)] = round(t - start[mm.group(1)], 3)
    return out


def agent_warnings(lines):
    return [l for l in lines if re.match(r"^\S+ (warning|warn|error|critical): ", l)]


# ----------------------------------------------------------------------------- producing


def produce(bootstrap, targets, total_bytes, value_bytes, timeout, acks="all"):
    """Produces ceil(total_bytes / value_bytes) records of random value_bytes (os.urandom:
    incompressible) with 11-byte keys, round robin over targets [(topic, partition)],
    acks=all and idempotent (or acks=1), 64 KiB batches, no compression. Faster than the tests'
    produce_keyed (no per-record callback or checksum). Returns (records, seconds)."""
    from confluent_kafka import Producer
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
    p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "enable.idempotence": acks == "all",
                  "linger.ms": 20, "batch.size": 65536, "compression.type": "none",
                  "queue.buffering.max.kbytes": 256 * 1024, "queue.buffering.max.messages": 1_000_000,
                  "message.timeout.ms": int(timeout * 1000), "delivery.report.only.error": True,
                  "on_delivery": on_delivery})
    n = -(-total_bytes // value_bytes)
    t0 = time.monotonic()
    deadline = t0 + timeout
    nt = len(targets)
    last_log = t0
    for i in range(n):
        topic, part = targets[i % nt]
        key = b"k%010d" % i
        value = os.urandom(value_bytes)
        while True:
            try:
                p.produce(topic, value=value, key=key, partition=part)
                break
            except BufferError:
                if time.monotonic() > deadline:
                    raise RuntimeError("produce: local queue still full after %d s" % timeout)
                p.poll(0.05)
        if i % 2000 == 0:
            p.poll(0)
            if errors:
                raise RuntimeError("produce: %d failed deliveries, first: %s" % (len(errors), errors[0]))
            if time.monotonic() - last_log > 15:
                last_log = time.monotonic()
                log("    produced %s of %s (%.0f MiB/s)" % (human(i * value_bytes), human(n * value_bytes),
                                                            i * value_bytes / MiB / (last_log - t0)))
    left = p.flush(max(1.0, deadline - time.monotonic()))
    if errors or left:
        raise RuntimeError("produce: %d failed deliveries (first: %s), %d not delivered" % (
            len(errors), errors[:1], left))
    return n, time.monotonic() - t0


# ----------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args):
        self.args = args
        self.wd = args.workdir
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.runner = rb.Runner(os.path.join(self.wd, "logs"), args.timeout)
        self.pw = os.path.join(self.wd, "repo.pw")
        rb.write_secret(self.pw)
        self.measurements, self.failures, self.notes, self.warnings = [], [], [], []
        self.results = {}
        self.live = []  # what to stop if we are interrupted: brokers, clusters of daemons

    # -- measuring ---------------------------------------------------------------------
    def settle(self):
        if self.args.drop_caches:
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
        if self.args.settle > 0:
            time.sleep(self.args.settle)

    def cmd(self, part, label, argv, env=None, rnd=None, measured=True, watch=(), **extra):
        """One command under the Runner (sync before and after); `watch`: {name: pid}
        of daemons whose CPU time during the command is recorded as cpu_<name>_s."""
        if measured:
            self.settle()
        tag = "%03d-%s-%s%s" % (len(self.measurements), part, re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:60],
                                "" if rnd is None else "-r%d" % rnd)
        log("%-7s %s%s%s" % (part, label, "" if rnd is None else " (round %d)" % (rnd + 1),
                             "" if measured else " (setup)"))
        watch = dict(watch)
        c0 = {k: cpu_of(v if isinstance(v, (list, tuple)) else [v]) for k, v in watch.items()}
        m = self.runner.run(argv, env or db.clean_env(), None, tag, sync=True)
        for k, v in watch.items():
            c1 = cpu_of(v if isinstance(v, (list, tuple)) else [v])
            m["cpu_%s_s" % k] = None if c0[k] is None or c1 is None else round(c1 - c0[k], 3)
        m.update(part=part, label=label, round=rnd, measured=measured, out_path=os.path.join(
            self.runner.logdir, tag + ".out"), **extra)
        self.measurements.append(m)
        if m["status"] != "ok":
            self.failed(m, "exit code %d" % m["rc"])
        elif measured:
            log("    wall %.2fs (+sync %.2fs)  cpu %.2fs%s" % (
                m["wall_s"], m["flush_s"], m.get("cpu_s") or 0,
                "".join("  %s cpu %s" % (k, f_s(m.get("cpu_%s_s" % k))) for k in watch)))
        return m

    def concurrent(self, part, label, argvs, watch=()):
        """Several commands at once (sync before and after): wall = first start to last
        end; each one's own wall and CPU (wait4) kept."""
        self.settle()
        tag = "%03d-%s-%s" % (len(self.measurements), part, re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:60])
        log("%-7s %s (%d at once)" % (part, label, len(argvs)))
        watch = dict(watch)
        c0 = {k: cpu_of(v) for k, v in watch.items()}
        os.sync()
        procs, files, res = [], [], [None] * len(argvs)
        t0 = time.monotonic()
        for i, argv in enumerate(argvs):
            out = open(os.path.join(self.runner.logdir, "%s-%d.out" % (tag, i)), "wb")
            err = open(os.path.join(self.runner.logdir, "%s-%d.err" % (tag, i)), "wb")
            files += [out, err]
            procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                          env=db.clean_env(), start_new_session=True))

        def waiter(i, p):
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            res[i] = {"rc": p.returncode, "wall_s": round(time.monotonic() - t0, 4),
                      "cpu_s": round(ru.ru_utime + ru.ru_stime, 3), "rss_kib": ru.ru_maxrss}
        threads = [threading.Thread(target=waiter, args=(i, p)) for i, p in enumerate(procs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.args.timeout)
        for p in procs:
            if p.returncode is None:
                rb.kill_group(p.pid)
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        t1 = time.monotonic()
        os.sync()
        flush = time.monotonic() - t1
        for f in files:
            f.close()
        m = {"part": part, "label": label, "argv": [list(a) for a in argvs], "wall_s": round(wall, 4),
             "flush_s": round(flush, 4), "procs": res, "measured": True,
             "cpu_s": round(sum(r["cpu_s"] for r in res if r), 3)}
        for k, v in watch.items():
            c1 = cpu_of(v)
            m["cpu_%s_s" % k] = None if c0[k] is None or c1 is None else round(c1 - c0[k], 3)
        for i, r in enumerate(res):
            r["stdout_tail"] = rb.tail(os.path.join(self.runner.logdir, "%s-%d.out" % (tag, i)), 1500)
            r["stderr_tail"] = rb.tail(os.path.join(self.runner.logdir, "%s-%d.err" % (tag, i)), 1500)
            try:
                r["summary"] = json.loads(r["stdout_tail"].strip().splitlines()[-1])
            except (ValueError, IndexError):
                pass
        bad = [i for i, r in enumerate(res) if not r or r["rc"] != 0]
        m["status"] = "FAILED" if bad else "ok"
        self.measurements.append(m)
        if bad:
            self.failed(m, "process(es) %s: exit %s\n%s" % (bad, [res[i]["rc"] for i in bad],
                                                             res[bad[0]]["stderr_tail"][-1500:]))
        else:
            log("    wall %.2fs (+sync %.2fs)  cpu %.2fs (%s)" % (
                wall, flush, m["cpu_s"], ", ".join("%.1fs" % r["wall_s"] for r in res)))
        return m

    def failed(self, m, why):
        m["status"] = "FAILED"
        m["failure"] = why
        self.failures.append(m)
        loud("%s: %s FAILED: %s\n%s" % (m.get("part"), m.get("label"), why,
                                        (m.get("stderr_tail") or "").strip()[-1500:]))

    def fail(self, part, label, why):
        self.failed({"part": part, "label": label, "argv": [], "measured": True}, why)
        self.measurements.append(self.failures[-1])

    # -- cairn pieces --------------------------------------------------------------------
    def ctl(self):
        return str(itc.CTL)

    def repo_init(self, repo, part):
        remove(repo)
        m = self.cmd(part, "cairnctl repo init", [self.ctl(), "repo", "init", "--repo", repo, "--password-file",
                                                  self.pw], measured=False)
        return m["status"] == "ok"

    def repo_check(self, repo, part, label, pw=None):
        m = self.cmd(part, label, [self.ctl(), "repo", "check", "--repo", repo, "--password-file", pw or self.pw],
                     measured=False)
        return m["status"] == "ok"

    def control_plane(self, base, brokers):
        """A controller and one enrolled agent per broker (`broker-<node id>`), all
        writing to base/repo (made by Cluster.init). Not measured."""
        c = itc.Cluster(base, liveness=itc.LIVENESS)  # the shipped defaults, set above
        self.live.append(c)
        c.init()
        c.start_controller()
        for b in brokers:
            name = "broker-%d" % b.node_id
            c.add_agent(name, components=b.component_toml())
            c.enrol(name)
        return c

    def drop_control_plane(self, c):
        c.stop_all()
        if c in self.live:
            self.live.remove(c)
        remove(str(c.base))

    def agent_backup(self, c, part, label, brokers, rnd=None):
        """`cairnctl backup create --component kafka --wait` through c; repository growth,
        the agents' own task durations and CPU, the brokers' CPU, the tasks' metadata."""
        names = ["broker-%d" % b.node_id for b in brokers]
        offs = {n: os.path.getsize(c.agents[n].log) for n in names}
        before = du_bytes(str(c.repo))
        m = self.cmd(part, label, [self.ctl(), "backup", "create", "--component", "kafka", "--wait"], env=c.env(),
                     rnd=rnd, watch={"agents": [c.agents[n].pid for n in names],
                                     "brokers": [b.pid() for b in brokers]})
        after = du_bytes(str(c.repo))
        m.update(repo_bytes=after, repo_growth=after - before, repo_alloc=alloc_bytes(str(c.repo)))
        durations, warns = {}, []
        for n in names:
            lines = agent_log_lines(c.agents[n].log, offs[n])
            for task, d in agent_task_durations(lines).items():
                durations[n] = d
            warns += ["%s: %s" % (n, w) for w in agent_warnings(lines)]
        m["agent_task_s"] = durations
        if warns:
            m["agent_warnings"] = warns
            self.warnings += ["%s (%s%s): %s" % (label, part, "" if rnd is None else ", round %d" % (rnd + 1), w)
                              for w in warns]
        if m["status"] == "ok":
            try:
                with open(m["out_path"], errors="replace") as f:
                    sid = itc.backup_set_id(f.read())
                shown = c.json("backup", "show", sid)
                m["set_state"] = itc.set_state(shown)
                m["tasks"] = [{"agent": t.get("agent_name") or t.get("agent_id"), "state": itc.task_state(t),
                               "bytes": t.get("bytes"), "files": t.get("files"),
                               "metadata": {k: v for k, v in json.loads(t.get("component_metadata") or "{}").items()
                                            if k != "partitions"}} for t in shown.get("tasks", [])]
                if m["set_state"] != "complete":
                    self.failed(m, "backup set %s is %s, not complete" % (sid, m["set_state"]))
            except (AssertionError, Failed, ValueError, KeyError) as e:
                self.failed(m, "backup show: %s" % e)
        return m

    def repo_backup(self, repo, part, label, src, rnd=None, watch=()):
        before = du_bytes(repo)
        m = self.cmd(part, label, [self.ctl(), "repo", "backup", "--repo", repo, "--password-file", self.pw,
                                   "--json", src], rnd=rnd, watch=watch)
        after = du_bytes(repo)
        m.update(repo_bytes=after, repo_growth=after - before, input_bytes=du_bytes(src))
        return m

    # -- part: online ------------------------------------------------------------------
    def start_broker(self, base):
        k = servers_kafka.Kafka.kraft(base)
        # A broker as deployed: the tests' fsync after every message (log.flush.interval.messages=1)
        # left out (Kafka's default: the page cache, replication for durability); bench segment size.
        text = k.config.read_text()
        text = "".join(l + "\n" for l in text.splitlines() if not l.startswith("log.flush.interval.messages="))
        text += "log.segment.bytes=%d\n" % (self.args.segment_mib * MiB)
        k.config.write_text(text)
        self.live.append(k)
        k.start()
        return k

    def part_online(self):
        a = self.args
        base = os.path.join(self.wd, "online")
        os.makedirs(base)
        k = self.start_broker(os.path.join(base, "kafka"))
        res = {"broker": {"version": servers_kafka.KRAFT_VERSION, "segment_bytes": a.segment_mib * MiB}}
        self.results["online"] = res
        try:
            topics = ["bench-%d" % t for t in range(a.topics)]
            per = -(-a.partitions // a.topics)
            targets = []
            for t in topics:
                k.create_topic(t, partitions=per, rf=1)
                targets += [(t, q) for q in range(per)]
            log("online: producing %s of %d-byte values to %d partitions of %d topics" % (
                human(a.gib * GiB), a.value_bytes, len(targets), len(topics)))
            n, secs = produce(k.bootstrap, targets, int(a.gib * GiB), a.value_bytes, a.timeout)
            time.sleep(2)
            log_dir = str(k.log_dir)
            segs, seg_bytes, parts = segments_of(log_dir)
            res["broker"].update(records=n, produce_s=round(secs, 1), partitions=len(targets), topics=len(topics),
                                 log_dir_bytes=du_bytes(log_dir), log_dir_alloc=alloc_bytes(log_dir), segment_files=segs, segment_bytes_total=seg_bytes,
                                 partition_dirs=parts)
            log("online: %d records in %.0f s (%.0f MiB/s); log dir %s, %d segment files in %d partition dirs" % (
                n, secs, n * a.value_bytes / MiB / secs, human(res["broker"]["log_dir_bytes"]), segs, parts))
            rows = {"cp": [], "first": [], "second": []}
            for rnd in range(a.runs):
                order = ["cp", "cairn"] if rnd % 2 == 0 else ["cairn", "cp"]
                for step in order:
                    if step == "cp":
                        dst = os.path.join(base, "cp-copy")
                        remove(dst)
                        m = self.cmd("online", "cp -a LOGDIR DST", ["cp", "-a", log_dir, dst], rnd=rnd,
                                     watch={"brokers": [k.pid()]})
                        m["copy_bytes"], m["copy_alloc"] = du_bytes(dst), alloc_bytes(dst)
                        rows["cp"].append(m)
                        remove(dst)
                        os.sync()
                    else:
                        c = self.control_plane(os.path.join(base, "cairn-r%d" % rnd), [k])
                        try:
                            init_bytes = du_bytes(str(c.repo))
                            m1 = self.agent_backup(c, "online", "cairn backup create (fresh repo)", [k], rnd)
                            m1["repo_bytes_init"] = init_bytes
                            rows["first"].append(m1)
                            m2 = self.agent_backup(c, "online", "cairn backup create (same repo, unchanged)",
                                                   [k], rnd)
                            rows["second"].append(m2)
                        finally:
                            self.drop_control_plane(c)
            res["rows"] = rows
            res["log_dir_bytes_end"] = du_bytes(log_dir)
        finally:
            k.stop()
            self.live.remove(k)
            if not self.args.keep:
                remove(base)

    # -- part: rf3 ---------------------------------------------------------------------
    def part_rf3(self):
        self.results["rf3"] = {}
        for variant in self.args.rf3_variants:
            try:
                self.rf3_variant(variant)
            except (Exception, Failed) as e:  # noqa: BLE001 -- reported, the next variant runs
                import traceback
                self.fail("rf3", "variant %s" % variant, "%s: %s\n%s" % (type(e).__name__, e,
                                                                          traceback.format_exc()[-2000:]))

    def rf3_variant(self, variant):
        """aligned: Kafka's defaults, size-based rolls only. On this loopback cluster every
        follower then rolled at the leader's offsets: the three replicas' segment files were
        byte-identical. shifted: the same, but the brokers' log.segment.bytes differ by
        --rf3-shift-mib (broker 1 the nominal size, broker 2 less, broker 3 more): each
        replica's segments begin at other offsets, at the same scale of segment size -- the
        case the driver's batch-aligned `kafka` chunk profile is for (on real clusters:
        time-based rolls with their per-broker jitter, restarts, reassigned replicas).
        jitter: time-based rolls with Kafka's per-segment random jitter (log.roll.ms,
        log.roll.jitter.ms), drawn by each broker for itself; the segment sizes then follow
        the production rate (a few MiB here)."""
        a = self.args
        base = os.path.join(self.wd, "rf3-" + variant)
        os.makedirs(base)
        props = {"log.flush.interval.messages": None}
        if variant == "jitter":
            props.update({"log.roll.ms": a.rf3_roll_ms, "log.roll.jitter.ms": a.rf3_roll_jitter_ms})
        kc = servers_kafka.KafkaCluster.kraft(os.path.join(base, "kc"), n=3, segment_bytes=a.rf3_segment_mib * MiB,
                                               props=props)
        seg_sizes = {}
        for b in kc.brokers:
            size = a.rf3_segment_mib * MiB
            if variant == "shifted":
                size += (0, -1, 1)[(b.node_id - 1) % 3] * int(a.rf3_shift_mib * MiB)
            text = "".join(l + "\n" for l in b.config.read_text().splitlines()
                           if not l.startswith("log.segment.bytes="))
            b.config.write_text(text + "log.segment.bytes=%d\n" % size)
            seg_sizes[b.node_id] = size
        self.live.append(kc)
        res = {"variant": variant, "props": {k: v for k, v in props.items() if v is not None},
               "segment_bytes_per_broker": seg_sizes}
        self.results["rf3"][variant] = res
        part = "rf3-" + variant
        acks = "all"
        try:
            kc.start()
            kc.create_topic("replicated", partitions=a.rf3_partitions, rf=3)
            log("%s: producing %s (RF 3: %s on each broker) to %d partitions" % (
                part, human(a.rf3_mib * MiB), human(a.rf3_mib * MiB), a.rf3_partitions))
            n, secs = produce(kc.bootstrap, [("replicated", q) for q in range(a.rf3_partitions)],
                              a.rf3_mib * MiB, a.value_bytes, a.timeout, acks=acks)
            servers_kafka.wait_isr(kc.bootstrap, "replicated")
            time.sleep(2)
            bro = {}
            for b in kc.brokers:
                segs, seg_bytes, parts = segments_of(str(b.log_dir))
                bro[b.node_id] = {"log_dir_bytes": du_bytes(str(b.log_dir)), "log_dir_alloc": alloc_bytes(str(b.log_dir)),
                                  "segment_files": segs,
                                  "segment_bytes_total": seg_bytes, "partition_dirs": parts}
            same, total = same_segments([str(b.log_dir) for b in kc.brokers], "replicated")
            res.update(same_segments=same, segments_per_broker=total, acks=acks)
            log("%s: %d of %d segment files identical (base offset and size) on all three brokers" % (part, same, total))
            res.update(records=n, produce_s=round(secs, 1), brokers=bro, segment_bytes=a.rf3_segment_mib * MiB,
                       partitions=a.rf3_partitions, version=servers_kafka.KRAFT_VERSION)
            log("%s: %d records in %.0f s; log dirs %s" % (part, n, secs, ", ".join(
                human(v["log_dir_bytes"]) for v in bro.values())))
            bpids = [b.pid() for b in kc.brokers]

            # One copy: broker 1's log dir alone, into a fresh repository.
            one = os.path.join(base, "one-copy")
            if self.repo_init(one, part):
                res["one"] = self.repo_backup(one, part, "one copy: cairnctl repo backup (broker 1 alone)",
                                              str(kc.broker(1).log_dir), watch={"brokers": bpids})
            remove(one)

            # Three agents, one repository, one backup set.
            c = self.control_plane(os.path.join(base, "cairn"), kc.brokers)
            try:
                m = self.agent_backup(c, part, "3 agents, one backup create, one repository", kc.brokers)
                m["repo_check"] = self.repo_check(str(c.repo), part, "repo check (3 agents' repository)",
                                                 pw=str(c.repo_pass))
                res["agents"] = m
            finally:
                self.drop_control_plane(c)

            # Three concurrent `cairnctl repo backup`, with and without --shared-with-replicas.
            for key, label, fracs in (("shared", "3x cairnctl repo backup --shared-with-replicas F", a.fractions),
                                      ("plain", "3x cairnctl repo backup (no sharing)", None)):
                repo = os.path.join(base, "repo-" + key)
                if not self.repo_init(repo, part):
                    continue
                before = du_bytes(repo)
                argvs = []
                for i, b in enumerate(kc.brokers):
                    argv = [self.ctl(), "repo", "backup", "--repo", repo, "--password-file", self.pw, "--json"]
                    if fracs:
                        argv += ["--shared-with-replicas", "%g" % fracs[i % len(fracs)]]
                    argvs.append(argv + [str(b.log_dir)])
                m = self.concurrent(part, label, argvs, watch={"brokers": bpids})
                after = du_bytes(repo)
                m.update(repo_bytes=after, repo_growth=after - before, fractions=fracs)
                m["repo_check"] = self.repo_check(repo, part, "repo check (%s)" % key)
                res[key] = m
                remove(repo)
        finally:
            kc.stop()
            if kc in self.live:
                self.live.remove(kc)
            if not self.args.keep:
                remove(base)

    def run(self):
        for part in self.args.parts:
            try:
                getattr(self, "part_" + part)()
            except (Exception, Failed) as e:  # noqa: BLE001 -- reported, the next part runs
                import traceback
                self.fail(part, "part %s" % part, "%s: %s\n%s" % (type(e).__name__, e,
                                                                   traceback.format_exc()[-2000:]))

    def stop_everything(self):
        for x in reversed(self.live):
            try:
                if isinstance(x, itc.Cluster):
                    x.stop_all()
                else:
                    x.stop()
            except Exception as e:  # noqa: BLE001 -- every one must be tried
                loud("stopping %r: %s" % (x, e))
        self.live = []


# ----------------------------------------------------------------------------- report


def med(ms, key="wall_s"):
    return median([m.get(key) for m in ms if m.get("status") == "ok"])


def per_round(ms, key="wall_s", nd=2):
    return ", ".join(f_s(m.get(key), nd) if m.get("status") == "ok" else "FAILED" for m in ms)


def agent_s(m):
    d = m.get("agent_task_s") or {}
    return max(d.values()) if d else None


def render(bench, header):
    R, a = bench.results, bench.args
    L = ["# Kafka driver benchmark (issue 11)", ""]
    L += ["- **%s**: %s" % (k, v) for k, v in header.items()] + [""]
    ratios = []
    if bench.failures:
        L += ["## FAILURES", ""]
        for m in bench.failures:
            L += ["- **%s / %s**: %s" % (m.get("part"), m.get("label"), (m.get("failure") or "").splitlines()[0]
                                         if m.get("failure") else "?")]
            if m.get("argv"):
                L += ["  `%s`" % (shlex.join(m["argv"]) if m["argv"] and isinstance(m["argv"][0], str)
                                  else "; ".join(shlex.join(x) for x in m["argv"]))]
        L += [""]
    on = R.get("online")
    if on and on.get("rows"):
        br, rows = on["broker"], on["rows"]
        L += ["## 1. Online backup of one broker vs `cp -a` of its log dir", "",
              "Kafka %s, KRaft, one node; %d topics, %d partitions, %d records of %d random bytes "
              "(produced in %.0f s); `log.segment.bytes` %s; log dir %s apparent (`du -sb`), %s allocated "
              "(the active segments' indexes are sparse 10 MiB files), %s in %d segment files." % (
                  br["version"], br["topics"], br["partitions"], br["records"], a.value_bytes, br["produce_s"],
                  human(br["segment_bytes"]), human(br["log_dir_bytes"]), human(br["log_dir_alloc"]),
                  human(br["segment_bytes_total"]), br["segment_files"]), ""]
        cp, first, second = rows["cp"], rows["first"], rows["second"]
        tab = []

        def row(name, ms, agent=True):
            ok = [m for m in ms if m.get("status") == "ok"]
            tab.append([name, f_s(med(ms)), f_s(median([m["wall_s"] + m["flush_s"] for m in ok])),
                        f_s(median([agent_s(m) for m in ok])) if agent else "-",
                        f_s(med(ms, "cpu_s")), f_s(med(ms, "cpu_agents_s")) if agent else "-",
                        f_s(med(ms, "cpu_brokers_s")), per_round(ms)])
        row("`cp -a LOGDIR DST`", cp, agent=False)
        row("cairn, fresh repository", first)
        row("cairn, same repository again (unchanged)", second)
        L += [md_table(["what", "wall s (median)", "wall+sync s", "agent task s", "CPU s (command)",
                        "CPU s (agent)", "CPU s (broker)", "wall per round"], tab), ""]
        r_wall = ratio(med(first), med(cp))
        ok_f = [m for m in first if m.get("status") == "ok"]
        ok_c = [m for m in cp if m.get("status") == "ok"]
        r_sync = ratio(median([m["wall_s"] + m["flush_s"] for m in ok_f]),
                       median([m["wall_s"] + m["flush_s"] for m in ok_c]))
        r_task = ratio(median([agent_s(m) for m in ok_f]), med(cp))
        ratios += [("online backup / `cp -a`, wall", r_wall[1]), ("online backup / `cp -a`, wall+sync", r_sync[1]),
                   ("agent task duration / `cp -a` wall", r_task[1])]
        md = [t["metadata"] for m in ok_f for t in m.get("tasks", [])]
        repo_first = median([m["repo_growth"] for m in ok_f])
        grow2 = median([m["repo_growth"] for m in second if m.get("status") == "ok"])
        L += ["| figure | value |", "|---|---|",
              "| ratio cairn / cp, wall (medians) | **%s** |" % r_wall[1],
              "| ratio cairn / cp, wall + the `sync` after it | %s |" % r_sync[1],
              "| ratio agent's task duration / cp wall | %s |" % r_task[1],
              "| log dir: apparent (`du -sb`) / allocated / segment files | %s / %s / %s |" % (
                  human(br["log_dir_bytes"]), human(br["log_dir_alloc"]), human(br["segment_bytes_total"])),
              "| repository growth, first backup (median) | %s (%.3f× the log dir's allocated bytes) |" % (
                  human(repo_first or 0), (repo_first or 0) / br["log_dir_alloc"]),
              "| repository growth, second backup of the unchanged broker (median) | %s |" % (
                  human(grow2) if grow2 is not None else "-"),
              "| files linked / copied by the driver (first backup) | %s |" % (
                  "%s / %s" % (md[0].get("files_linked"), md[0].get("files_copied")) if md else "-"),
              "| bytes the driver staged (metadata `bytes`) | %s |" % (human(md[0]["bytes"]) if md and
                                                                        md[0].get("bytes") else "-"), ""]
        L += ["cairn = `cairnctl backup create --component kafka --wait` through a controller and an enrolled "
              "agent, into a repository made just before (not measured; a new controller, agent and repository "
              "each round); the second row is the next backup into the same repository, the broker unchanged "
              "(it reads no linked segment again). *agent task s*: from the agent's log, `task … starts` to "
              "`task … succeeded`. `cp -a` copies the live log dir to a directory on the same file system "
              "(removed after each round). Rounds alternate which goes first%s." % (
                  "" if not a.settle else "; %g s pause before each measured command" % a.settle), ""]
    for variant, rf in (R.get("rf3") or {}).items():
        if not rf.get("one"):
            continue
        one = rf["one"]
        oc = one["repo_growth"] if one.get("status") == "ok" else None
        L += ["## 2%s. RF=3: three replicas into one repository, %s segments" % (
                  "abc"[list(R["rf3"]).index(variant)] if len(R["rf3"]) > 1 else "", variant), "",
              {"aligned": "Kafka's defaults: size-based rolls only, the same `log.segment.bytes` on every broker. ",
               "shifted": "Size-based rolls, `log.segment.bytes` %s on brokers 1 / 2 / 3: each replica's segments "
                          "begin at other offsets (a stand-in for time-based rolls with their per-broker jitter, "
                          "restarts, reassigned replicas). " % " / ".join(
                              human(v) for _, v in sorted(rf["segment_bytes_per_broker"].items(),
                                                          key=lambda kv: int(kv[0]))),
               "jitter": "Time-based rolls with Kafka's per-segment random jitter, drawn by each broker for itself "
                         "(`log.roll.ms` %s, `log.roll.jitter.ms` %s): the replicas' segments begin at other "
                         "offsets; their sizes follow the production rate. " % (
                             rf["props"].get("log.roll.ms"), rf["props"].get("log.roll.jitter.ms"))}[variant] +
              "Kafka %s, 3 KRaft nodes (broker+controller each); topic with %d partitions, RF 3; %d records of "
              "%d random bytes (%s, produced in %.0f s, acks=%s); `log.segment.bytes` (nominal) %s; "
              "**%d of %d segment files per broker identical on all three** (same base offset and size); "
              "log dirs %s." % (
                  rf["version"], rf["partitions"], rf["records"], a.value_bytes, human(rf["records"] * a.value_bytes),
                  rf["produce_s"], rf["acks"], human(rf["segment_bytes"]),
                  rf["same_segments"], rf["segments_per_broker"],
                  " / ".join("%s allocated, %s in %d segment files" % (
                      human(v["log_dir_alloc"]), human(v["segment_bytes_total"]), v["segment_files"])
                             for v in rf["brokers"].values())), ""]
        tab = []
        tab.append(["one copy: `cairnctl repo backup` of broker 1's log dir, fresh repository", 1,
                    f_mib(oc), "1.00" if oc else "-", f_s(one.get("wall_s")), f_s(one.get("cpu_s")), "-"])
        for key, name in (("agents", "3 agents, one `backup create`, one repository (the driver)"),
                          ("shared", "3× `cairnctl repo backup --shared-with-replicas F` at once (F = %s)" %
                           ", ".join("%g" % f for f in a.fractions)),
                          ("plain", "3× plain `cairnctl repo backup` at once (no sharing)")):
            m = rf.get(key)
            if not m:
                continue
            if m.get("status") != "ok":
                tab.append([name, 3, "FAILED", "-", "-", "-", "-"])
                continue
            r = ratio(m["repo_growth"], oc)
            cpu = m.get("cpu_agents_s") if key == "agents" else m.get("cpu_s")
            tab.append([name, 3, f_mib(m["repo_growth"]), "**%s**" % r[1], f_s(m["wall_s"]), f_s(cpu),
                        "ok" if m.get("repo_check") else "**FAILED**"])
            ratios.append(("RF=3 (%s) growth / one copy: %s" % (variant, key), r[1]))
        L += [md_table(["how", "writers", "repository growth MiB", "÷ one copy", "wall s", "CPU s (writers)",
                        "`repo check`"], tab), ""]
        ag = rf.get("agents")
        if ag and ag.get("agent_task_s"):
            L += ["Agents' own task durations: %s." % ", ".join(
                "%s %s s" % (n, f_s(d)) for n, d in sorted(ag["agent_task_s"].items())), ""]
        L += ["Growth = change of the repository's apparent size (`du -sb`). The agents' driver shares "
              "automatically (`shared_with_replicas`, walk start from the node id: 0.28, 0.90, 0.52 for nodes 1, "
              "2, 3 — the F given to the `repo backup` processes). `repo backup` reads the live log dirs as they "
              "are (indexes included); the driver leaves out the active segments' preallocated indexes.", ""]
    if ratios:
        L += ["## Ratios", "", md_table(["what", "value"], [list(r) for r in ratios]), ""]
    if bench.warnings:
        L += ["## Warnings the agents logged", ""] + ["- `%s`" % w[:400] for w in bench.warnings[:40]] + [""]
    if bench.notes:
        L += ["## Notes", ""] + ["- " + n for n in bench.notes] + [""]
    L += ["Columns: wall = elapsed time of the command; wall+sync adds the `sync` right after it; CPU (command) "
          "= user+sys of the command and its children (for `backup create` only cairnctl's polling: the work is "
          "the agent's, in *CPU s (agent)*, read from /proc before and after); broker CPU likewise. Page cache "
          "%s." % ("dropped before every measured command (--drop-caches)" if a.drop_caches else
                   "not dropped (as in bench/drivers): the log dirs are in memory, both tools read them from it"), ""]
    return "\n".join(L), ratios


# ----------------------------------------------------------------------------- main


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default=",".join(PARTS), help="subset of %s" % ",".join(PARTS))
    ap.add_argument("--gib", type=float, default=2.0, help="online: GiB of record values to produce (default 2)")
    ap.add_argument("--topics", type=int, default=2, help="online: topics (default 2)")
    ap.add_argument("--partitions", type=int, default=8, help="online: partitions in all, over the topics (8)")
    ap.add_argument("--segment-mib", type=int, default=256, help="online: log.segment.bytes in MiB (256)")
    ap.add_argument("--runs", type=int, default=3, help="online: rounds, medians reported (default 3)")
    ap.add_argument("--rf3-mib", type=int, default=300, help="rf3: MiB of values (each broker holds all) (300)")
    ap.add_argument("--rf3-partitions", type=int, default=6, help="rf3: partitions of the RF 3 topic (6)")
    ap.add_argument("--rf3-segment-mib", type=int, default=16, help="rf3: log.segment.bytes in MiB (16)")
    ap.add_argument("--rf3-variants", default="aligned,shifted",
                    help="rf3: aligned (Kafka's defaults: here the replicas rolled at the same offsets), shifted "
                         "(per-broker log.segment.bytes: other offsets), jitter (time-based rolls with per-broker "
                         "jitter) (aligned,shifted)")
    ap.add_argument("--rf3-shift-mib", type=float, default=1.0,
                    help="rf3 shifted: broker 2's segments this much smaller, broker 3's larger (1)")
    ap.add_argument("--rf3-roll-ms", type=int, default=2000, help="rf3 jitter: log.roll.ms (2000)")
    ap.add_argument("--rf3-roll-jitter-ms", type=int, default=1500, help="rf3 jitter: log.roll.jitter.ms (1500)")
    ap.add_argument("--fractions", default="0.28,0.90,0.52",
                    help="rf3: --shared-with-replicas of the three repo backup processes (0.28,0.90,0.52)")
    ap.add_argument("--value-bytes", type=int, default=1024, help="record value size (1024)")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds before each measured command (5)")
    ap.add_argument("--drop-caches", action="store_true",
                    help="sync and drop the page cache before each measured command (off, as in bench/drivers)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="report and raw JSON")
    ap.add_argument("--workdir", default="/var/tmp",
                    help="a temp dir is made here for brokers, copies, repositories (removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (the stopped brokers' log dirs too)")
    ap.add_argument("--timeout", type=int, default=1800, help="per command, seconds")
    a = ap.parse_args(argv)
    a.parts = [p for p in a.parts.split(",") if p]
    for p in a.parts:
        if p not in PARTS:
            ap.error("unknown part %r (choose from %s)" % (p, ",".join(PARTS)))
    a.fractions = [float(x) for x in a.fractions.split(",") if x]
    a.rf3_variants = [v for v in a.rf3_variants.split(",") if v]
    if any(v not in ("aligned", "shifted", "jitter") for v in a.rf3_variants):
        ap.error("--rf3-variants: aligned, shifted, jitter")
    if a.runs < 1 or a.partitions < a.topics or not a.fractions:
        ap.error("--runs >= 1, --partitions >= --topics, --fractions not empty")
    return a


def need_bytes(a):
    need = 0
    if "online" in a.parts:
        need = max(need, int(a.gib * GiB * 1.1 * 3.2))  # log dir, its cp copy or a repository, staging copies
    if "rf3" in a.parts:
        need = max(need, int(a.rf3_mib * MiB * 1.1 * 5))  # 3 log dirs + repositories
    return need + 2 * GiB


class BusyWatch(threading.Thread):
    """Samples busy_now() every `every` s during the run: other processes' CPU (a build,
    tests) on a 2-core machine moves every figure."""

    def __init__(self, every=15.0):
        super().__init__(daemon=True)
        self.every, self.seen, self.samples = every, [], 0
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.wait(self.every):
            b = busy_now()
            self.samples += 1
            if b != "none":
                self.seen.append("%s %s" % (time.strftime("%H:%M:%S"), b))

    def summary(self):
        self.stop_ev.set()
        if not self.seen:
            return "none in %d samples (every %g s)" % (self.samples, self.every)
        return "**in %d of %d samples** (every %g s): %s" % (len(self.seen), self.samples, self.every,
                                                            "; ".join(self.seen[:12]) +
                                                            (" …" if len(self.seen) > 12 else ""))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for b in (itc.CTL, itc.CONTROLLER, itc.AGENT):
        if not os.path.exists(b):
            sys.exit("missing %s: build it first" % b)
    why = servers_kafka.available(servers_kafka.KRAFT_VERSION)
    if why:
        sys.exit(why)
    st = os.statvfs(args.workdir)
    free = st.f_bavail * st.f_frsize
    if free < need_bytes(args):
        sys.exit("%s has %s free; these sizes need about %s" % (args.workdir, human(free), human(need_bytes(args))))
    args.workdir = tempfile.mkdtemp(prefix="cairn-bench-kafka-", dir=args.workdir)
    t_start = time.monotonic()

    def on_term(signum, frame):
        raise SystemExit("terminated by signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)

    log("workdir %s (%s free)" % (args.workdir, human(free)))
    built = snapshot_binaries(os.path.join(args.workdir, "bin"))
    bench = Bench(args)
    header = {
        "command": shlex.join([sys.executable] + (sys.argv if argv is None else ["run.py"] + argv)),
        "date": now_iso(),
        "host": host_info(args.workdir),
        "free disk at start": human(free),
        "other processes using CPU at start": busy_now(),
        "versions": "; ".join([
            "cairnctl: " + tool_version([str(itc.CTL), "--version"]),
            "Kafka %s (KRaft)" % servers_kafka.KRAFT_VERSION,
            "java: " + tool_version(["java", "-version"]).split(" / ")[0],
            "cp: " + tool_version(["cp", "--version"]).split(" / ")[0]]),
        "cairn source": "%s; binaries (copied at the start, so a rebuild during the run does not mix them): %s" % (
            db.source_state(types.SimpleNamespace(cairnctl="/nonexistent", etcd_steps="/nonexistent")).split(";")[0],
            ", ".join("%s built %s" % kv for kv in built.items())),
        "control plane": "tests/integration/cluster.py's, with heartbeat_interval_ms %d and liveness %d (the shipped "
                         "defaults; the tests use 200 ms)" % (itc.HEARTBEAT_MS, itc.LIVENESS),
        "parts": ",".join(args.parts),
        "sizes": "online: %g GiB of values, %d topics / %d partitions, segments %d MiB, %d round(s), medians; "
                 "rf3: %d MiB of values, %d partitions RF 3, segments %d MiB, variants %s" % (
                     args.gib, args.topics, args.partitions, args.segment_mib, args.runs, args.rf3_mib,
                     args.rf3_partitions, args.rf3_segment_mib, ",".join(args.rf3_variants)),
        "page cache": "dropped before each measured command" if args.drop_caches else
        "not dropped (bench/drivers does not drop it; writing /proc/sys/vm/drop_caches %s here)" % (
            "is permitted" if os.access("/proc/sys/vm/drop_caches", os.W_OK) else "is NOT permitted"),
    }
    watch = BusyWatch()
    watch.start()
    try:
        bench.run()
    finally:
        bench.stop_everything()
        header["other processes using CPU during the run"] = watch.summary()
        header["other processes using CPU at end"] = busy_now()
        header["load avg at end"] = " ".join("%.2f" % x for x in os.getloadavg())
        header["duration"] = "%.0f s" % (time.monotonic() - t_start)
        if not args.keep:
            remove(args.workdir)
        else:
            log("kept %s" % args.workdir)
    report, ratio_rows = render(bench, header)
    print(report)
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, bench.stamp)
    with open(base + "-report.md", "w") as f:
        f.write(report + "\n")
    with open(base + "-raw.json", "w") as f:
        json.dump({"header": header, "results": bench.results, "measurements": bench.measurements,
                   "ratios": ratio_rows, "notes": bench.notes, "warnings": bench.warnings,
                   "harness_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss},
                  f, indent=1, default=str)
    log("report: %s-report.md  raw: %s-raw.json" % (base, base))
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
