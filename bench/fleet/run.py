#!/usr/bin/python3
"""The controller at fleet scale (bench/fleet/README.md).

Starts a real cairn-controller (temp data dir, ports chosen at run time), runs
cairn-fleet-sim with N simulated agents against it, and measures: enrolment
and approval, one backup set over every agent, progress throughput, a
controller restart (reconnect storm), the controller's peak RSS, and
`cairnctl backup list` / `agent list` / `status` with 10,000 sets in the
catalog. Prints a markdown report and writes JSON to bench/fleet/results/.

Stdlib only. Every process it starts is stopped by its PID.
"""
import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening: fleet tcp://[0-9.]+:(\d+) operator tcp://127\.0\.0\.1:(\d+)")
FINAL_BYTES = 1 << 30  # sim_agent.h kFinalBytes


def fail(msg):
    raise SystemExit(f"fleet bench: {msg}")


class Sim:
    """One cairn-fleet-sim process; a thread keeps its latest counters line."""

    def __init__(self, argv, log):
        self.log = open(log, "ab")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        self.latest = None
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            try:
                j = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.latest = j

    def command(self, text):
        self.p.stdin.write((text + "\n").encode())
        self.p.stdin.flush()

    def stop(self):
        if self.p.poll() is None:
            try:
                self.command("quit")
                self.p.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait(timeout=10)
        self.log.close()


class Bench:
    def __init__(self, args):
        self.a = args
        self.build = pathlib.Path(args.build_dir)
        self.ctl_bin = self.build / "cairnctl" / "cairnctl"
        self.controller_bin = pathlib.Path(args.controller_bin or self.build / "controller" / "cairn-controller")
        self.sim_bin = self.build / "bench" / "fleet" / "cairn-fleet-sim"
        self.fill_bin = self.build / "bench" / "fleet" / "cairn-fleet-fill"
        for b in (self.ctl_bin, self.controller_bin, self.sim_bin, self.fill_bin):
            if not b.exists():
                fail(f"{b} not found: build it (cmake --build {self.build}) or pass --build-dir")
        self.base = pathlib.Path(tempfile.mkdtemp(prefix="cairn-fleet-"))
        self.keys = self.base / "keys"
        self.cfg = self.base / "controller.toml"
        self.log = self.base / "controller.log"
        self.controller = None
        self.sims = []
        self.endpoint = None
        self.starts = 0  # controller starts seen in its log
        self.results = {}

    # ---- processes ------------------------------------------------------
    def env(self):
        e = dict(os.environ)
        e["CAIRN_OPERATOR_KEY_DIR"] = os.fspath(self.keys)
        if self.endpoint:
            e["CAIRN_CONTROLLER"] = self.endpoint
        return e

    def ctl(self, *args, check=True, timeout=600):
        t0 = time.monotonic()
        p = subprocess.run([os.fspath(self.ctl_bin), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, env=self.env(), timeout=timeout)
        took = time.monotonic() - t0
        self.last_stderr = p.stderr.decode(errors="replace")
        if check and p.returncode != 0:
            fail(f"cairnctl {' '.join(map(str, args))} exited {p.returncode}: {p.stderr.decode(errors='replace')[-2000:]}")
        return p.stdout.decode(errors="replace"), took

    def write_config(self):
        self.ctl("keys", "init", "--dir", self.keys)
        self.cfg.write_text(f"""[controller]
id = "fleet-bench"
data_dir = "{self.base / 'controller'}"
key_dir = "{self.keys}"
log_level = "{self.a.log_level}"
[fleet]
listen = "tcp://127.0.0.1:*"
heartbeat_interval_ms = {self.a.heartbeat_ms}
liveness = {self.a.liveness}
backlog = {self.a.backlog}
io_threads = {self.a.io_threads}
max_pending_agents = {self.a.agents + 100}
[audit]
refusals_per_minute = {self.a.agents + 100}
[operator]
listen = "tcp://127.0.0.1:*"
authorized_keys = {{ bench = "{self.keys / 'operator-curve.pub'}" }}
[http]
listen = "127.0.0.1:0"
""")

    def start_controller(self):
        started = time.monotonic()
        f = open(self.log, "ab")
        env = None
        if self.a.libzmq_dir:  # the controller alone; the simulators keep the system's libzmq
            env = dict(os.environ, LD_LIBRARY_PATH=os.fspath(pathlib.Path(self.a.libzmq_dir).resolve()))
        self.controller = subprocess.Popen([os.fspath(self.controller_bin), "--config", os.fspath(self.cfg)],
                                           stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        f.close()
        deadline = time.monotonic() + 120
        listening = m = None
        while time.monotonic() < deadline:
            if self.controller.poll() is not None:
                fail(f"the controller exited with {self.controller.returncode}; see {self.log}")
            found = list(LISTENING.finditer(self.log.read_text(errors="replace")))
            if len(found) > self.starts:
                listening, m = time.monotonic(), found[-1]
                self.starts = len(found)
                break
            time.sleep(0.01)
        if listening is None:
            fail(f"the controller did not start within 120 s; see {self.log}")
        # Which libzmq.so the controller loaded: Debian's, or --libzmq-dir's.
        try:
            for line in pathlib.Path(f"/proc/{self.controller.pid}/maps").read_text().splitlines():
                if "libzmq.so" in line and "/" in line:
                    self.results["controller_libzmq"] = line[line.index("/"):]
                    break
        except OSError:
            pass
        if self.endpoint is None:  # first start: keep the ports it chose
            self.fleet_port, op_port = int(m.group(1)), int(m.group(2))
            self.endpoint = f"tcp://127.0.0.1:{op_port}"
            cfg = self.cfg.read_text()
            cfg = cfg.replace('listen = "tcp://127.0.0.1:*"', f'listen = "tcp://127.0.0.1:{self.fleet_port}"', 1)
            cfg = cfg.replace('listen = "tcp://127.0.0.1:*"', f'listen = "{self.endpoint}"', 1)
            self.cfg.write_text(cfg)
        return started, listening

    def stop_controller(self):
        if self.controller.poll() is not None:  # already stopped (big_catalog stops it to fill the catalog)
            return
        os.kill(self.controller.pid, signal.SIGTERM)
        self.controller.wait(timeout=120)

    def rss_mb(self):
        hwm = rss = 0
        for line in pathlib.Path(f"/proc/{self.controller.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
        return round(hwm, 1), round(rss, 1)

    def sim_argvs(self):
        """One argv per simulator process, with the number of agents it runs."""
        n = self.a.agents
        procs = sim_processes(n, self.a.per_process)
        out = []
        for i in range(procs):
            count = n // procs + (1 if i < n % procs else 0)
            first = sum(n // procs + (1 if k < n % procs else 0) for k in range(i))
            argv = [os.fspath(self.sim_bin), "--endpoint", f"tcp://127.0.0.1:{self.fleet_port}",
                    "--controller-key", os.fspath(self.keys / "controller-curve.pub"),
                    "--signing-keys", os.fspath(self.keys / "controller-signing.pub"),
                    "--agents", str(count), "--first", str(first), "--task-ms", "5000", "--progress-rate", "0"]
            out.append((argv, count))
        return out

    def start_sim(self, argv):
        self.sims.append(Sim(argv, self.base / f"sim-{len(self.sims)}.log"))

    def counters(self):
        """The sims' counters summed: counts added, first = earliest, last = latest."""
        for s in self.sims:
            s.command("status")
        time.sleep(0.05)
        out = {"registered": 0, "progress_dropped": 0}
        for s in self.sims:
            if s.p.poll() is not None:
                fail(f"a fleet-sim process exited with {s.p.returncode}; see {s.log.name}")
            with s.lock:
                j = s.latest
            if j is None:
                return None
            out["registered"] += j["registered"]
            out["progress_dropped"] += j["progress_dropped"]
            for k, v in j.items():
                if isinstance(v, list):
                    n, first, last = v
                    o = out.setdefault(k, [0, 0.0, 0.0])
                    if n:
                        o[1] = first if o[0] == 0 else min(o[1], first)
                        o[2] = max(o[2], last)
                    o[0] += n
        return out

    def sims_command(self, text):
        for s in self.sims:
            s.command(text)

    def wait(self, what, pred, timeout, interval=0.05):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = pred()
            if last:
                return last
            time.sleep(interval)
        fail(f"{what} did not happen within {timeout} s (last: {str(last)[:300]}); logs in {self.base}")

    def count(self, key, at_least):
        def pred():
            c = self.counters()
            return c if c and c.get(key, [0])[0] >= at_least else None
        return pred

    def catalog(self):
        con = sqlite3.connect(f"file:{self.base / 'controller' / 'catalog.db'}?mode=ro", uri=True, timeout=30)
        con.execute("PRAGMA busy_timeout = 30000")
        return con

    # ---- phases ---------------------------------------------------------
    def enrol(self):
        """Every key arrives at once, is listed as pending and approved with
        one command. With --enrol-wave W < N the simulator processes start a
        wave of about W agents at a time, each wave approved before the next
        starts (see --enrol-wave)."""
        n = self.a.agents
        t0 = time.monotonic()
        waves, wave, size = [], [], 0
        for argv, count in self.sim_argvs():
            if wave and size + count > self.a.enrol_wave:
                waves.append((wave, size))
                wave, size = [], 0
            wave.append(argv)
            size += count
        waves.append((wave, size))
        started = 0
        per_wave = []
        took_approve = listed = 0
        t_pending = None
        for argvs, size in waves:
            tw = time.monotonic()
            for argv in argvs:
                self.start_sim(argv)
            started += size
            c = self.wait("every simulated agent refused once by ZAP (so listed as pending)",
                          self.count("first_refusals", started), timeout=120 + size / 50)

            def all_pending():
                out, _ = self.ctl("agent", "list", "--json")
                j = json.loads(out)
                agents = j.get("agents", []) if isinstance(j, dict) else j
                pending = sum(1 for a in agents if str(a.get("state", "")).lower().endswith("pending"))
                return time.monotonic() if pending >= size else None
            t_pending = self.wait(f"{size} agents listed as pending by 'cairnctl agent list'", all_pending,
                                  timeout=120 + size / 50, interval=0.2)
            t1 = time.monotonic()
            out, took = self.ctl("agent", "approve", "--all-pending", "--yes")
            took_approve += took
            listed += sum(1 for line in self.last_stderr.splitlines() if " key " in line)
            c = self.wait("every simulated agent registered as approved", lambda: self._all_registered(started),
                          timeout=120 + size / 50)
            t_registered = c["approved_replies"][2]
            per_wave.append({"agents": size, "start_to_all_pending_s": round(t_pending - tw, 3),
                             "approve_command_s": round(took, 3),
                             "approve_start_to_all_registered_s": round(t_registered - t1, 3),
                             "start_to_all_registered_s": round(t_registered - tw, 3)})
        hwm, rss = self.rss_mb()
        self.results["enrol"] = {
            "waves": len(waves),
            "start_to_all_pending_s": per_wave[0]["start_to_all_pending_s"] if len(waves) == 1 else None,
            "start_to_every_key_refused_once_s": round(c["first_refusals"][2] - t0, 3) if len(waves) == 1 else None,
            "approve_all_pending_command_s": round(took_approve, 3),
            "approve_output_lines_naming_agents": listed,
            "approve_start_to_all_registered_s": per_wave[0]["approve_start_to_all_registered_s"] if len(waves) == 1 else None,
            "start_to_all_registered_s": round(t_registered - t0, 3),
            "per_wave": per_wave if len(waves) > 1 else None,
            "controller_rss_mb_after_enrol": {"peak": hwm, "now": rss},
        }

    def _all_registered(self, n):
        c = self.counters()
        return c if c and c["registered"] >= n else None

    def one_set(self, label, rate, task_ms):
        n = self.a.agents
        self.sims_command(f"task {rate} {task_ms}")
        self.sims_command("reset")
        time.sleep(0.2)
        con = self.catalog()
        t0 = time.monotonic()
        out, took_create = self.ctl("backup", "create")
        sid = next((w.split()[2] for w in out.splitlines() if w.startswith("backup set ")), None)
        if not sid:
            fail(f"no set id in: {out[-500:]}")
        c = self.wait(f"{label}: every plan verified and acknowledged by the agents", self.count("plans", n),
                      timeout=120 + n / 20, interval=0.01)
        t_acked_by_agents = c["plans"][2]
        t_first_acked_by_agents = c["plans"][1]

        def catalog_acked():
            q = con.execute("SELECT count(*) FROM tasks WHERE backup_set_id LIKE ? AND state NOT IN ('pending', 'sent')",
                            (sid + "%",)).fetchone()[0]
            return time.monotonic() if q >= n else None
        t_in_catalog = self.wait(f"{label}: every acknowledgement recorded in the catalog", catalog_acked,
                                 timeout=120 + n / 20, interval=0.01)
        c = self.wait(f"{label}: every result acknowledged by the controller", self.count("result_acks", n),
                      timeout=300 + n / 10 + task_ms / 1000, interval=0.05)
        rejected = c["plans_rejected"][0]
        show, _ = self.ctl("backup", "show", sid, "--json")
        s = json.loads(show)
        tasks = s.get("tasks", [])
        succeeded = sum(1 for t in tasks if str(t.get("state", "")).lower().endswith("succeeded"))
        final_progress = sum(1 for t in tasks if int(t.get("progress", {}).get("bytes_done", 0)) == FINAL_BYTES
                             and t.get("progress", {}).get("current_item") == "done")
        r = {
            "set": sid,
            "set_state": str(s.get("state", "")).lower(),
            "tasks": len(tasks),
            "tasks_succeeded": succeeded,
            "tasks_whose_shown_progress_is_the_last_sent": final_progress,
            "plans_verified": c["plans"][0],
            "plans_rejected": rejected,
            "create_command_s": round(took_create, 3),
            "create_to_first_plan_acked_by_agents_s": round(t_first_acked_by_agents - t0, 3),
            "create_to_all_plans_acked_by_agents_s": round(t_acked_by_agents - t0, 3),
            "create_to_all_acks_in_catalog_s": round(t_in_catalog - t0, 3),
        }
        if rate:
            p = c["progress"]
            window = max(1e-6, p[2] - p[1])
            r.update({
                "progress_sent": p[0],
                "progress_dropped_at_agents": c["progress_dropped"],
                "progress_offered_per_s": round(p[0] / window),
                "progress_absorbed_per_s": round(p[0] / max(1e-6, c["result_acks"][2] - p[1])),
                "last_progress_to_last_result_ack_s": round(c["result_acks"][2] - p[2], 3),
            })
        con.close()
        self.results[label] = r

    def storm(self, label="reconnect_storm"):
        n = self.a.agents
        # The controller's peak over everything before the restart (enrolment,
        # the sets, progress at the full rate, whose unread messages wait in
        # its memory), not only with every agent connected and quiet.
        hwm_before = self.rss_mb()[0] if self.controller.poll() is None else None
        self.stop_controller()
        self.sims_command("reset")
        time.sleep(0.2)
        started, listening = self.start_controller()
        c = self.wait("every agent registered again after the restart", self.count("approved_replies", n),
                      timeout=120 + n / 20, interval=0.02)
        c = self.wait("every agent registered", lambda: self._all_registered(n), timeout=60)
        last = c["approved_replies"][2]
        hwm, rss = self.rss_mb()
        self.results[label] = {
            "process_start_to_listening_s": round(listening - started, 3),
            "listening_to_all_registered_s": round(last - listening, 3),
            "process_start_to_all_registered_s": round(last - started, 3),
            "controller_rss_mb_with_all_connected": {"peak": hwm, "now": rss},
            "controller_rss_mb_peak_before_restart": hwm_before,
        }

    def hold(self, seconds):
        """Every agent connected and heartbeating for `seconds` after the
        storm: what long-lived connections cost. Each of an agent's two
        pipes in libzmq passes its frames through chunks of 256 slots
        (16 KB, posix_memalign'd) and keeps a spare chunk, so a fresh
        connection's memory is touched slot by slot until it settles after
        ~500 frames each way (cairn's messages are 2 frames; heartbeats go
        both ways every heartbeat interval)."""
        n = self.a.agents
        before = self.rss_mb()
        samples = []
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            time.sleep(min(10.0, max(0.0, t_end - time.monotonic())))
            samples.append(self.rss_mb()[1])
        c = self.counters()
        hwm, rss = self.rss_mb()
        self.results["hold"] = {
            "seconds": seconds,
            "heartbeats_each_way_per_agent": round(seconds * 1000 / self.a.heartbeat_ms),
            "agents_registered": c["registered"] if c else None,
            "controller_rss_mb_at_start": before[1],
            "controller_rss_mb_samples": samples,
            "controller_rss_mb_at_end": {"peak": hwm, "now": rss},
        }
        if not c or c["registered"] < n:
            fail(f"only {c and c['registered']} of {n} agents registered after holding {seconds} s")

    def big_catalog(self):
        self.stop_controller()
        t0 = time.monotonic()
        p = subprocess.run([os.fspath(self.fill_bin), "--catalog", os.fspath(self.base / "controller" / "catalog.db"),
                            "--sets", str(self.a.catalog_sets), "--agents", str(self.a.fill_agents)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=3600)
        if p.returncode != 0:
            fail(f"cairn-fleet-fill exited {p.returncode}: {p.stderr.decode(errors='replace')[-2000:]}")
        fill = json.loads(p.stdout)
        fill["wall_s"] = round(time.monotonic() - t0, 1)
        self.sims_command("reset")
        self.storm("reconnect_storm_big_catalog")
        con = self.catalog()
        sets = con.execute("SELECT count(*) FROM backup_sets").fetchone()[0]
        con.close()
        timings = {}
        for cmd in (("backup", "list"), ("agent", "list"), ("status",), ("backup", "list", "--json"),
                    ("agent", "list", "--json"), ("status", "--json")):
            runs = [self.ctl(*cmd)[1] for _ in range(self.a.repeat)]
            timings[" ".join(cmd)] = {"median_s": round(statistics.median(runs), 3), "max_s": round(max(runs), 3)}
        self.results["big_catalog"] = {"sets_in_catalog": sets, "fill": fill, "cairnctl": timings}

    def stop(self):
        for s in self.sims:
            s.stop()
        if self.controller and self.controller.poll() is None:
            self.stop_controller()


def machine():
    model = ""
    try:
        for line in subprocess.run(["lscpu"], stdout=subprocess.PIPE, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem = 0
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {"nproc": os.cpu_count(), "cpu": model, "mem_gib": mem, "kernel": platform.release()}


def report(res):
    r = res["results"]
    n = res["agents"]
    rows = []

    def row(what, value, target):
        rows.append(f"| {what} | {value} | {target} |")
    e = r.get("enrol", {})
    row("keys arrive → all pending (sim start → `agent list` shows every key pending)", f"{e.get('start_to_all_pending_s')} s", "")
    row("`agent approve --all-pending --yes` (lists and approves all)", f"{e.get('approve_all_pending_command_s')} s", "")
    row("approve → every agent registered as approved", f"{e.get('approve_start_to_all_registered_s')} s", "")
    waves = e.get("waves") or 1
    row("enrol total (sim start → all approved and registered)" +
        (f", in {waves} waves of ~{n // waves} agents, each approved before the next starts" if waves > 1 else ""),
        f"{e.get('start_to_all_registered_s')} s", f"≤ {5 * n / 1000:g} s")
    p = r.get("plans", {})
    row("one set over every agent: create → every plan verified+acked at the agents",
        f"{p.get('create_to_all_plans_acked_by_agents_s')} s", f"≤ {0.25 * n / 1000:g} s")
    row("… → every ack recorded in the catalog", f"{p.get('create_to_all_acks_in_catalog_s')} s", "")
    g = r.get("progress", {})
    row("progress offered (agents' send rate)", f"{g.get('progress_offered_per_s')} /s", "≥ 100,000 /s")
    row("progress absorbed (sent ÷ first progress → last ResultAck)", f"{g.get('progress_absorbed_per_s')} /s", "")
    row("tasks whose `show` progress is the last one sent", f"{g.get('tasks_whose_shown_progress_is_the_last_sent')} / {g.get('tasks')}",
        "all")
    s = r.get("reconnect_storm", {})
    row("reconnect storm: controller listening → all registered", f"{s.get('listening_to_all_registered_s')} s",
        f"≤ {2 * n / 1000:g} s")
    row("… process start → all registered", f"{s.get('process_start_to_all_registered_s')} s", "")
    repeats = sorted(int(k.rsplit("_", 1)[1]) for k in r
                     if k.startswith("reconnect_storm_") and k.rsplit("_", 1)[1].isdigit())
    again = [r[f"reconnect_storm_{i}"]["listening_to_all_registered_s"] for i in repeats]
    if again:
        row("… the storm repeated (`--storms`)", ", ".join(f"{t} s" for t in again), "")
    rss = s.get("controller_rss_mb_with_all_connected", {})
    row("controller peak RSS (VmHWM) with every agent connected, just after the storm (fresh connections)", f"{rss.get('peak')} MB",
        "≤ 100 MB" if n <= 1000 else "≤ 1 GB")
    row("… peak over the run before the restart (enrolment, sets, progress at full rate)",
        f"{s.get('controller_rss_mb_peak_before_restart')} MB", "")
    h = r.get("hold")
    if h:
        row(f"controller RSS after every agent stayed connected {h['seconds']:g} s more "
            f"(~{h['heartbeats_each_way_per_agent']} heartbeats each way an agent; libzmq's pipes settle after ~500 frames, 2 a message)",
            f"{h['controller_rss_mb_at_end']['now']} MB", "≤ 100 MB" if n <= 1000 else "≤ 1 GB")
    b = r.get("big_catalog", {})
    for cmd, t in b.get("cairnctl", {}).items():
        row(f"`cairnctl {cmd}` with {b.get('sets_in_catalog')} sets", f"{t['median_s']} s (max {t['max_s']})", "≤ 0.2 s")
    m = res["machine"]
    head = (f"### {n} agents ({res['processes']} simulator process(es)), {res['date']}\n\n"
            f"Machine: {m['nproc']} cores ({m['cpu']}), {m['mem_gib']} GiB. Command: `{res['command']}`\n\n"
            f"The controller's libzmq: `{r.get('controller_libzmq', '?')}`\n\n"
            "| what | measured | target |\n|---|---|---|\n")
    return head + "\n".join(rows) + "\n"


def sim_processes(agents, per_process):
    """At most per_process agents a process, and at least one process per CPU
    (down to 250 agents a process): a simulator process is one thread, so its
    agents verify plans one after another, where a real fleet verifies on every
    host at once."""
    return max(1, math.ceil(agents / per_process), min(os.cpu_count() or 1, math.ceil(agents / 250)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--per-process", type=int, default=1250, help="at most this many simulated agents per cairn-fleet-sim process (and at least one process per CPU)")
    ap.add_argument("--enrol-wave", type=int, default=0,
                    help="start the simulator processes about this many agents at a time, each wave approved "
                         "before the next (0: all at once). Keys waiting for approval retry their CURVE handshake "
                         "every 2-3 s, so 10,000 at once cost ~4,000 handshakes/s on both ends; on a machine "
                         "that also runs the simulators this bounds that load")
    ap.add_argument("--heartbeat-ms", type=int, default=2000)
    ap.add_argument("--liveness", type=int, default=5)
    ap.add_argument("--backlog", type=int, default=4096, help="the controller's fleet.backlog (its default)")
    ap.add_argument("--io-threads", type=int, default=0, help="the controller's fleet.io_threads (0: its default)")
    ap.add_argument("--progress-rate", type=int, default=120,
                    help="progress events a second per task (120: ~114,000/s offered by 1,000 agents; the simulator sends a little under its rate)")
    ap.add_argument("--progress-seconds", type=float, default=3)
    ap.add_argument("--storms", type=int, default=1, help="restart the controller this many times (the storm's spread)")
    ap.add_argument("--hold-seconds", type=float, default=0,
                    help="after the storm, keep every agent connected this long and report the controller's memory")
    ap.add_argument("--catalog-sets", type=int, default=10000, help="0: skip the list/status timings")
    ap.add_argument("--fill-agents", type=int, default=5, help="tasks per filled set")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--build-dir", default=os.environ.get("CAIRN_BUILD_DIR") or os.fspath(ROOT / "build"))
    ap.add_argument("--controller-bin", help="another cairn-controller binary (e.g. a baseline build)")
    ap.add_argument("--libzmq-dir", help="run the controller on the libzmq.so.5 in this directory (LD_LIBRARY_PATH), "
                    "which wins over its RUNPATH (its own, build/lib/cairn): /usr/lib/x86_64-linux-gnu "
                    "runs it on Debian's libzmq5; for comparisons")
    ap.add_argument("--out", help="JSON file (default bench/fleet/results/<agents>-<date>.json)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, catalog)")
    args = ap.parse_args()

    if args.enrol_wave <= 0:
        args.enrol_wave = args.agents
    b = Bench(args)
    res = {"agents": args.agents, "processes": sim_processes(args.agents, args.per_process),
           "date": datetime.date.today().isoformat(), "machine": machine(),
           "command": " ".join([sys.argv[0]] + sys.argv[1:]), "config": vars(args), "results": b.results}
    ok = False
    try:
        b.write_config()
        b.start_controller()
        b.enrol()
        b.one_set("plans", 0, max(5000, args.agents))
        b.one_set("progress", args.progress_rate, int(args.progress_seconds * 1000))
        b.storm()
        for i in range(2, args.storms + 1):
            b.storm(f"reconnect_storm_{i}")
        if args.hold_seconds:
            b.hold(args.hold_seconds)
        if args.catalog_sets:
            b.big_catalog()
        ok = True
    finally:
        b.stop()
        if ok and not args.keep:
            shutil.rmtree(b.base, ignore_errors=True)
        else:
            print(f"logs and catalog kept in {b.base}", file=sys.stderr)
    out = pathlib.Path(args.out) if args.out else ROOT / "bench" / "fleet" / "results" / f"{args.agents}-{res['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(report(res))
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
