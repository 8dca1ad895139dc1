"""A real Prometheus (Debian's `prometheus`) on loopback for the driver's tests.

It scrapes itself every second, keeps its data in the test's tmp dir, and is
started and stopped by two small scripts that the test also declares as the
component's service commands in the agent's configuration: start.sh launches
the server in the background and writes its PID file, stop.sh stops that PID
(never a process found by name) and waits until it is gone.
"""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from ports import free_port  # noqa: F401 (the tests import it from here too)

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

START = """#!/bin/sh
# Starts prometheus in the background (its output to the log), PID to the pid file.
set -e
if [ -f '{pid}' ] && kill -0 "$(cat '{pid}')" 2>/dev/null; then exit 0; fi
'{prom}' --config.file='{config}' --storage.tsdb.path='{data}' \\
  --web.listen-address=127.0.0.1:{port} {admin} </dev/null >>'{log}' 2>&1 &
echo $! > '{pid}'
"""

STOP = """#!/bin/sh
# Stops the prometheus of the pid file and waits until it has exited (a zombie
# left for a slow init to reap counts as exited).
[ -f '{pid}' ] || exit 0
pid=$(cat '{pid}')
running() {{
  [ -r /proc/$pid/stat ] || return 1
  state=$(sed 's/.*) //' /proc/$pid/stat | cut -d' ' -f1)
  [ "$state" != Z ]
}}
kill "$pid" 2>/dev/null || true
i=0
while running; do
  i=$((i + 1))
  if [ $i -eq 300 ]; then kill -9 "$pid" 2>/dev/null || true; fi
  if [ $i -gt 600 ]; then echo "prometheus $pid does not exit" >&2; exit 1; fi
  sleep 0.1
done
rm -f '{pid}'
"""


class Prometheus:
    def __init__(self, base, admin=True, scrape_interval="1s"):
        if not os.access(PROMETHEUS, os.X_OK):
            pytest.fail(f"'{PROMETHEUS}' not found: install Debian's prometheus (bash scripts/install-deps.sh)")
        self.base = pathlib.Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = self.base / "data"
        self.config = self.base / "prometheus.yml"
        self.rules = self.base / "rules.yml"
        self.pid_file = self.base / "prometheus.pid"
        self.log = self.base / "prometheus.log"
        self.start_sh = self.base / "start.sh"
        self.stop_sh = self.base / "stop.sh"
        self.config.write_text(f"""global:
  scrape_interval: {scrape_interval}
  evaluation_interval: {scrape_interval}
rule_files:
  - {self.rules}
scrape_configs:
  - job_name: self
    static_configs:
      - targets: ['127.0.0.1:{self.port}']
""")
        self.rules.write_text("groups:\n  - name: cairn\n    rules:\n      - record: cairn:up:sum\n        expr: sum(up)\n")
        args = dict(prom=PROMETHEUS, config=self.config, data=self.data, port=self.port, log=self.log,
                    pid=self.pid_file, admin="--web.enable-admin-api" if admin else "")
        self.start_sh.write_text(START.format(**args))
        self.stop_sh.write_text(STOP.format(**args))
        os.chmod(self.start_sh, 0o755)
        os.chmod(self.stop_sh, 0o755)

    def backfill(self, series=20, start=None, seconds=3600, step=15):
        """Persisted blocks in the data dir before the server starts, made by
        promtool from OpenMetrics samples of `cairn_backfill` (one per series
        and step, values i*step + series); returns the number of samples."""
        start = int(start if start is not None else time.time() - 3 * 3600)
        lines = ["# TYPE cairn_backfill gauge"]
        for k in range(series):
            for i in range(0, seconds // step):
                lines.append(f'cairn_backfill{{series="{k}"}} {i * step + k} {start + i * step}')
        lines.append("# EOF")
        src = self.base / "backfill.om"
        src.write_text("\n".join(lines) + "\n")
        self.data.mkdir(parents=True, exist_ok=True)
        p = subprocess.run([shutil.which("promtool") or "/usr/bin/promtool", "tsdb", "create-blocks-from",
                            "openmetrics", src, self.data], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=120)
        assert p.returncode == 0, p.stdout.decode(errors="replace")
        return series * (seconds // step)

    # ---- process ----------------------------------------------------------
    def start(self):
        subprocess.run([self.start_sh], check=True, timeout=30)
        self.wait_ready()
        return self

    def stop(self):
        subprocess.run([self.stop_sh], check=True, timeout=90)

    def pid(self):
        try:
            return int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def log_tail(self, n=30):
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        pytest.fail(f"prometheus at {self.url} not ready within {timeout} s\n{self.log_tail()}")

    # ---- queries ----------------------------------------------------------
    def api(self, path, **params):
        q = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{q}", timeout=30) as r:
            j = json.load(r)
        assert j["status"] == "success", j
        return j["data"]

    def raw_samples(self, selector, start, end):
        """Every raw sample of the selector's series in (start, end] (unix seconds):
        {labels as a sorted tuple: [(t, value), ...]}."""
        rng = max(1, int(end - start))
        data = self.api("/api/v1/query", query=f"{selector}[{rng}s]", time=f"{end:.3f}")
        out = {}
        for s in data["result"]:
            out[tuple(sorted(s["metric"].items()))] = [(float(t), v) for t, v in s["values"]]
        return out

    def wait_samples(self, selector, count, timeout=90):
        """Waits until the selector's first series has at least `count` samples in the TSDB."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.api("/api/v1/query", query=f"count_over_time({selector}[10m])")
            if data["result"] and float(data["result"][0]["value"][1]) >= count:
                return
            time.sleep(0.5)
        pytest.fail(f"prometheus did not record {count} samples of {selector} within {timeout} s\n{self.log_tail()}")

    def component_toml(self, name="prometheus"):
        """The [[component]] table the agent's configuration declares for this server."""
        return f"""[[component]]
name = "{name}"
driver = "prometheus"
url = "{self.url}"
data_dir = "{self.data}"
config_files = ["{self.config}", "{self.rules}"]
service = {{ start_command = ["{self.start_sh}"], stop_command = ["{self.stop_sh}"], timeout_seconds = 90 }}
"""


@pytest.fixture
def prometheus_server(tmp_path):
    """A running Prometheus with its admin API on; stopped by PID at the end."""
    p = Prometheus(tmp_path / "prometheus")
    try:
        yield p.start()
    finally:
        try:
            p.stop()
        except Exception:
            pid = p.pid()
            if pid:
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
