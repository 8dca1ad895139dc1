#!/usr/bin/python3
"""
bench/repo/run.py -- compare `cairnctl repo` with restic, borg and two floors
(tar|zstd for backup, cp -a for restore) on the same corpus, in one invocation.

Standard library only. See README.md next to this file for method and caveats.

Scenarios (per round, per tool; medians over --runs rounds):
  initial   first backup of a fresh working copy into a fresh repository
  nochange  second backup, nothing changed
  change    third backup after `make_corpus.py --mutate` (applied once per round,
            before the third backups of all tools)
  restore   full restore of the latest snapshot into an empty dir, verified
            against a sha256 manifest of the source

Progress goes to stderr; the markdown report goes to stdout and to --out.
"""
import argparse
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import random
import resource
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

MiB = 1 << 20
HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
SEED_DEFAULT = 20240601
SCENARIOS = ("initial", "nochange", "change", "restore")
TITLES = {
    "initial": "1. initial backup (fresh repository)",
    "nochange": "2. second backup, no change",
    "change": "3. third backup after the mutation (Kafka append + etcd db pages rewritten, see Notes)",
    "restore": "4. full restore of the latest snapshot (verified)",
}
BACKUP_SCENARIOS = ("initial", "nochange", "change")
CORPUS_PYTHON = "/usr/bin/python3"  # make_corpus.py is byte-stable for one CPython build


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def loud(msg):
    bar = "!" * 78
    print("\n%s\n%s\n%s" % (bar, msg, bar), file=sys.stderr, flush=True)


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)



def tail(path, limit=2000):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def du_bytes(path):
    """Apparent size of a tree incl. directories, hard links once -- like `du -sb`."""
    if not os.path.lexists(path):
        return 0
    seen, total = set(), 0
    stack = [path]
    while stack:
        p = stack.pop()
        st = os.lstat(p)
        if st.st_nlink > 1 and not os.path.isdir(p):
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
        total += st.st_size
        if os.path.isdir(p) and not os.path.islink(p):
            stack.extend(os.path.join(p, n) for n in os.listdir(p))
    return total


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(MiB), b""):
            h.update(blk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- manifests
# Same "sha256  size  relpath" format as make_corpus.py --manifest.


def tree_manifest(root):
    rows = {}
    for dp, dns, fns in os.walk(root):
        dns.sort()
        for fn in fns:
            p = os.path.join(dp, fn)
            rows[os.path.relpath(p, root)] = (sha256_file(p), os.path.getsize(p))
    return rows


def read_manifest(path):
    rows = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                h, size, rel = line.rstrip("\n").split("  ", 2)
                rows[rel] = (h, int(size))
    return rows


def write_manifest(rows, path):
    with open(path, "w") as f:
        for rel in sorted(rows):
            f.write("%s  %d  %s\n" % (rows[rel][0], rows[rel][1], rel))


def compare_manifests(expected, got, show=5):
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    changed = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    res = {"ok": not (missing or extra or changed), "files": len(got),
           "missing": len(missing), "extra": len(extra), "changed": len(changed)}
    if not res["ok"]:
        res["examples"] = ["missing " + k for k in missing[:show]] + \
            ["extra " + k for k in extra[:show]] + ["changed " + k for k in changed[:show]]
    return res


def tree_bytes(root):
    return sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(root) for fn in fns)


def manifest_bytes(rows):
    return sum(size for _, size in rows.values())


# ----------------------------------------------------------------------------- corpora


class SmallCorpus:
    """~58 MB synthetic stand-in for make_corpus.py, for smoke tests (--small).
    Same landmarks (etcd bbolt-like db, Kafka active segment) so the mutation
    mimics the real one at ~1/12 scale."""

    VERSION = 2
    PAGE = 4096
    DB_PAGES = 4096  # 16 MiB
    KAFKA_LOG = os.path.join("kafka", "logs", "orders-0", "00000000000000000000.log")
    DB = os.path.join("etcd", "member", "snap", "db")
    MUTATION = "small mutate: +4 MiB to %s, 5%% of %s pages rewritten" % (KAFKA_LOG, DB)
    WORDS = ("backup snapshot restore kafka etcd broker leader follower partition offset "
             "segment index compaction revision member cluster node config haproxy "
             "backend frontend server timeout retry error warning info debug").split()

    @classmethod
    def _text(cls, rng, nbytes):
        out, n = [], 0
        while n < nbytes:
            line = "%d %s %s\n" % (rng.getrandbits(40), rng.choice(("INFO", "WARN", "DEBUG")),
                                   " ".join(rng.choice(cls.WORDS) for _ in range(rng.randint(4, 14))))
            out.append(line)
            n += len(line)
        return "".join(out).encode()[:nbytes]

    @classmethod
    def _json_records(cls, rng, nbytes, start):
        out, n, i = [], 0, start
        while n < nbytes:
            rec = ('{"offset":%d,"event":"%s","order":%d,"amount":%d.%02d,"session":"%016x"}\n'
                   % (i, rng.choice(("order_created", "order_paid", "order_shipped")),
                      4100000000 + i, rng.randint(1, 999), rng.randint(0, 99), rng.getrandbits(64)))
            out.append(rec)
            n += len(rec)
            i += 1
        return "".join(out).encode()

    @classmethod
    def _db_page(cls, rng):
        kind = rng.random()
        if kind < 0.25:
            return bytes(cls.PAGE)
        if kind < 0.6:
            return rng.randbytes(cls.PAGE)
        return cls._text(rng, cls.PAGE)

    @staticmethod
    def _write(root, rel, data):
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)

    @classmethod
    def generate(cls, out, seed):
        rng = random.Random(seed)
        os.makedirs(out)
        for i in range(4):
            cls._write(out, "random/blob-%d.bin" % i, rng.randbytes(4 * MiB))
        low = int.from_bytes(rng.randbytes(8 * MiB), "little") & \
            int.from_bytes(rng.randbytes(8 * MiB), "little")
        cls._write(out, "random/lowentropy.bin", low.to_bytes(8 * MiB, "little"))
        first = None
        for i in range(120):
            rel = "configs/node-%02d/app-%03d.conf" % (i // 12, i)
            data = first if (first and i % 10 == 5) else cls._text(rng, rng.randint(8, 64) * 1024)
            first = first or data
            cls._write(out, rel, data)
        cls._write(out, "logs/app.log", cls._text(rng, 6 * MiB))
        cls._write(out, cls.DB, b"".join(cls._db_page(rng) for _ in range(cls.DB_PAGES)))
        cls._write(out, cls.KAFKA_LOG, cls._json_records(rng, 12 * MiB, 0))

    @classmethod
    def mutate(cls, root, seed):
        rng = random.Random(seed * 7 + 1)
        with open(os.path.join(root, cls.KAFKA_LOG), "ab") as f:
            f.write(cls._json_records(rng, 4 * MiB, 10 ** 6))
        fd = os.open(os.path.join(root, cls.DB), os.O_WRONLY)
        try:
            for pg in sorted(rng.sample(range(1, cls.DB_PAGES), cls.DB_PAGES // 20)):
                os.pwrite(fd, rng.randbytes(cls.PAGE), pg * cls.PAGE)
        finally:
            os.close(fd)


class Corpora:
    """Builds/caches pristine corpora in the work dir. A cache entry is DIR plus
    DIR.manifest (sha256 list) and DIR.json (what built it); it is reused only if the
    builder key matches and the tree still hashes to the manifest."""

    def __init__(self, workdir, script, small):
        self.workdir, self.script, self.small = workdir, script, small
        if not small and not os.path.isfile(script):
            sys.exit("corpus script not found: %s (use --corpus-script)" % script)

    def key(self, seed):
        if self.small:
            return {"kind": "small", "version": SmallCorpus.VERSION, "seed": seed}
        return {"kind": "make_corpus", "seed": seed, "script_sha256": sha256_file(self.script),
                "python": subprocess.run([CORPUS_PYTHON, "-V"], capture_output=True,
                                         text=True).stdout.strip()}

    def generate(self, out, seed):
        if self.small:
            in_child(SmallCorpus.generate, out, seed)
        else:
            run_checked([CORPUS_PYTHON, self.script, "--out", out, "--seed", str(seed)])

    def mutate(self, root, seed):
        if self.small:
            in_child(SmallCorpus.mutate, root, seed)
            return SmallCorpus.MUTATION
        return run_checked([CORPUS_PYTHON, self.script, "--out", root, "--mutate",
                            "--seed", str(seed)]).strip()

    def record_manifest(self, root, path):
        if self.small:
            write_manifest(tree_manifest(root), path)
        else:  # the corpus' own manifest writer, as the reference format
            run_checked([CORPUS_PYTHON, self.script, "--out", root, "--manifest", path])

    def _ensure(self, name, key, build):
        path = os.path.join(self.workdir, name)
        meta_p, man_p = path + ".json", path + ".manifest"
        if os.path.isdir(path) and os.path.isfile(meta_p) and os.path.isfile(man_p):
            with open(meta_p) as f:
                meta = json.load(f)
            if meta.get("key") == key:
                log("verifying cached corpus %s against its manifest" % path)
                rows = tree_manifest(path)
                if rows == read_manifest(man_p):
                    return path, rows
                log("cached corpus %s does not match its manifest: regenerating" % path)
            else:
                log("cached corpus %s was built differently: regenerating" % path)
        for p in (path, path + ".partial", meta_p, man_p):
            remove(p)
        log("generating corpus %s (one-off, cached afterwards)" % path)
        t0 = time.monotonic()
        build(path + ".partial")
        os.rename(path + ".partial", path)
        self.record_manifest(path, man_p)
        with open(meta_p, "w") as f:
            json.dump({"key": key, "built": now_iso(),
                       "build_seconds": round(time.monotonic() - t0, 1)}, f, indent=1)
        return path, read_manifest(man_p)

    def pristine(self, seed):
        name = "%s-seed%d" % ("small" if self.small else "corpus", seed)
        return self._ensure(name, self.key(seed), lambda out: self.generate(out, seed))

    def scaled(self, base, seed, k):
        """k corpora with seeds seed..seed+k-1 side by side (seed-<N>/ subdirs); the
        first is a copy of the pristine corpus `base`."""
        key = {"scale": k, "parts": [self.key(seed + i) for i in range(k)]}

        def build(out):
            os.makedirs(out)
            for i in range(k):
                sub = os.path.join(out, "seed-%d" % (seed + i))
                if i == 0:
                    run_checked(["cp", "-a", base, sub])
                else:
                    self.generate(sub, seed + i)
        name = "%s-scale%d-seed%d" % ("small" if self.small else "corpus", k, seed)
        return self._ensure(name, key, build)


def in_child(fn, *args):
    """Run fn in a forked child: keeps this process's peak RSS (which Linux charges
    to every command we spawn, see Runner) low."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn(*args)
            code = 0
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        sys.exit("%s%r failed in a child process" % (fn.__qualname__, args))


def run_checked(argv, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit("command failed (exit %d): %s\n%s" % (p.returncode, shlex.join(argv),
                                                      p.stderr[-2000:]))
    return p.stdout


def now_iso():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- tools
# One row per tool. Command templates use these placeholders:
#   {bin} tool binary  {repo} repository path  {pw} password file  {cache} cache dir
#   {src} absolute source dir  {parent}/{name} its parent and basename
#   {target} restore dir  {n} backup number in the round  {last} last backup number
#   {base} borg base dir  {pw_q} shell-quoted password file


@dataclasses.dataclass(frozen=True)
class Tool:
    name: str
    label: str
    needs: tuple            # executables that must exist; needs[0] is {bin}
    scenarios: tuple
    init: tuple = ()
    backup: tuple = ()
    restore: tuple = ()
    restore_cwd_target: bool = False
    env: tuple = ()         # (VAR, template) pairs
    cache: str = ""         # dir reported as "cache", not counted in repo size
    version: tuple = ()

    @property
    def uses_password(self):
        parts = self.init + self.backup + self.restore + tuple(v for _, v in self.env)
        return any("{pw" in p for p in parts)


TOOLS = (
    Tool("cairn", "cairnctl repo", ("cairnctl",), SCENARIOS,
         init=("{bin}", "repo", "init", "--repo", "{repo}", "--password-file", "{pw}"),
         backup=("{bin}", "repo", "backup", "--repo", "{repo}", "--password-file", "{pw}",
                 "--json", "{src}"),
         restore=("{bin}", "repo", "restore", "--repo", "{repo}", "--password-file", "{pw}",
                  "latest", "--target", "{target}"),
         version=("{bin}", "--version")),
    Tool("restic", "restic", ("restic",), SCENARIOS,
         init=("{bin}", "-r", "{repo}", "init", "--cache-dir", "{cache}"),
         backup=("{bin}", "-r", "{repo}", "backup", "{src}", "--cache-dir", "{cache}"),
         restore=("{bin}", "-r", "{repo}", "restore", "latest", "--target", "{target}",
                  "--cache-dir", "{cache}"),
         env=(("RESTIC_PASSWORD_FILE", "{pw}"),),
         cache="{cache}", version=("{bin}", "version")),
    Tool("borg", "borg", ("borg",), SCENARIOS,
         init=("{bin}", "init", "-e", "repokey-blake2", "{repo}"),
         backup=("{bin}", "create", "--compression", "lz4", "{repo}::snap{n}", "{src}"),
         restore=("{bin}", "extract", "{repo}::snap{last}"), restore_cwd_target=True,
         env=(("BORG_PASSCOMMAND", "cat {pw_q}"), ("BORG_BASE_DIR", "{base}"),
              ("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes"),
              ("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")),
         cache="{base}", version=("{bin}", "--version")),
    Tool("tar", "tar|zstd -1 -T2", ("tar", "zstd", "bash"), ("initial",),
         backup=("bash", "-c", 'set -o pipefail; tar -cf - -C "$1" "$2" | zstd -1 -T2 -q -o "$3"',
                 "bash", "{parent}", "{name}", "{repo}/backup{n}.tar.zst"),
         version=("bash", "-c", "tar --version | head -1; zstd --version")),
    Tool("cp", "cp -a", ("cp",), ("restore",),
         restore=("cp", "-a", "{src}", "{target}/"),
         version=("bash", "-c", "cp --version | head -1")),
)
TOOL_NAMES = tuple(t.name for t in TOOLS)


def fill(template, ctx):
    return [part.format(**ctx) for part in template]


class ToolRun:
    """A tool's state for one round: its repository, cache, password, backup count."""

    def __init__(self, tool, binary, workdir):
        self.tool, self.binary = tool, binary
        self.dir = os.path.join(workdir, "run", tool.name)
        self.pw = os.path.join(workdir, "secrets", tool.name + ".pw")
        self.ctx = {"bin": binary, "repo": os.path.join(self.dir, "repo"),
                    "cache": os.path.join(self.dir, "cache"), "pw": self.pw,
                    "pw_q": shlex.quote(self.pw), "base": os.path.join(workdir, "borgbase"),
                    "n": 0, "last": 0}
        self.failed = None      # first failure this round stops the tool's later steps
        self.repo_bytes = 0

    def reset(self):
        remove(self.dir)
        if self.tool.cache:
            remove(self.fmt(self.tool.cache))
        os.makedirs(self.dir)
        if self.tool.backup and not self.tool.init:  # tar writes into a plain dir
            os.makedirs(self.ctx["repo"])
        self.ctx["n"] = self.ctx["last"] = 0
        self.failed = None
        self.repo_bytes = 0

    def fmt(self, s):
        return s.format(**self.ctx)

    def command(self, which, **extra):
        ctx = dict(self.ctx, **extra)
        return fill(getattr(self.tool, which), ctx)

    def env(self):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RESTIC_", "BORG_", "CAIRN_"))}
        env.update((k, self.fmt(v)) for k, v in self.tool.env)
        return env

    def cache_bytes(self):
        return du_bytes(self.fmt(self.tool.cache)) if self.tool.cache else None


def write_secret(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.chmod(os.path.dirname(path), 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(24) + "\n")
    os.chmod(path, 0o600)


def resolve_binary(tool, args):
    """Path of the tool's main binary, or None if any needed executable is missing."""
    overrides = {"cairnctl": args.cairnctl, "restic": args.restic, "borg": args.borg}
    found = []
    for exe in tool.needs:
        path = overrides.get(exe) or shutil.which(exe)
        if not path or not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return None, "%s not found%s" % (exe, " at " + path if path else " on PATH")
        found.append(os.path.abspath(path))
    return found[0], None


def tool_version(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=20,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "n/a (%s)" % e
    out = [l.strip() for l in (p.stdout or p.stderr).splitlines() if l.strip()]
    if p.returncode != 0 or not out:
        return "n/a (`%s` exit %d)" % (shlex.join(argv), p.returncode)
    return " / ".join(out[:3])


# ----------------------------------------------------------------------------- measuring


class Runner:
    """Runs one command and measures wall, CPU (user+sys incl. all waited-for
    descendants, from os.wait4) and peak RSS.

    Linux charges a child the RSS high-water mark of the process that forked it
    (the mm it had before exec), so ru_maxrss from our own wait4 can never read
    below this Python process's peak RSS. When GNU time is present we wrap the
    command in it (`time -f %M`, a ~2 MB forker) and report its max RSS; the
    wait4 figure is kept in the raw JSON as rss_wait4_kib."""

    def __init__(self, logdir, timeout):
        self.logdir, self.timeout = logdir, timeout
        os.makedirs(logdir, exist_ok=True)
        self.gnu_time = self._find_gnu_time()
        self.floor = {}
        for how in ("wait4",) + (("gnu-time",) if self.gnu_time else ()):
            m = self.run(["true"], os.environ.copy(), None, "floor-" + how, sync=False,
                         use_time=(how == "gnu-time"))
            self.floor[how] = m["rss_kib"]

    @staticmethod
    def _find_gnu_time():
        path = shutil.which("time") or "/usr/bin/time"
        try:
            p = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5)
            return path if "GNU" in (p.stdout + p.stderr) else None
        except OSError:
            return None

    def run(self, argv, env, cwd, tag, sync=True, use_time=None):
        use_time = bool(self.gnu_time) if use_time is None else use_time
        out_p, err_p, rss_p = (os.path.join(self.logdir, tag + ext)
                               for ext in (".out", ".err", ".rss"))
        full = ([self.gnu_time, "-f", "%M", "-o", rss_p] if use_time else []) + list(argv)
        if sync:
            os.sync()  # the previous step's dirty pages must not bleed into this one
        with open(out_p, "wb") as out, open(err_p, "wb") as err:
            t0 = time.monotonic()
            try:
                p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                     env=env, cwd=cwd, start_new_session=True)
            except OSError as e:
                err.write(str(e).encode())
                return self._result(argv, cwd, 127, time.monotonic() - t0, None, None,
                                    err_p, out_p, 0.0)
            timer = threading.Timer(self.timeout, kill_group, (p.pid,))
            timer.start()
            try:
                _, status, ru = os.wait4(p.pid, 0)
            except BaseException:
                kill_group(p.pid)
                raise
            finally:
                timer.cancel()
            wall = time.monotonic() - t0
            p.returncode = rc = os.waitstatus_to_exitcode(status)
        t1 = time.monotonic()
        if sync:
            os.sync()
        flush = time.monotonic() - t1
        rss = self._time_rss(rss_p) if use_time else None
        return self._result(argv, cwd, rc, wall, ru, rss, err_p, out_p, flush)

    @staticmethod
    def _time_rss(path):
        try:
            with open(path) as f:
                lines = [l.strip() for l in f if l.strip()]
            return int(lines[-1])
        except (OSError, ValueError, IndexError):
            return None

    def _result(self, argv, cwd, rc, wall, ru, rss, err_p, out_p, flush):
        m = {"argv": list(argv), "cwd": cwd, "rc": rc, "status": "ok" if rc == 0 else "FAILED",
             "wall_s": round(wall, 4), "flush_s": round(flush, 4)}
        if ru is not None:
            m.update(cpu_user_s=round(ru.ru_utime, 3), cpu_sys_s=round(ru.ru_stime, 3),
                     cpu_s=round(ru.ru_utime + ru.ru_stime, 3), rss_wait4_kib=ru.ru_maxrss)
        m["rss_kib"] = rss if rss is not None else m.get("rss_wait4_kib")
        m["rss_source"] = "gnu-time" if rss is not None else "wait4"
        m["stderr_tail"] = tail(err_p)
        m["stdout_tail"] = tail(out_p)
        last = (m["stdout_tail"].strip().splitlines() or [""])[-1]
        try:  # e.g. `cairnctl repo backup --json` statistics
            doc = json.loads(last)
            if isinstance(doc, (dict, list)):
                m["stdout_json"] = doc
        except ValueError:
            pass
        if rc < 0:
            m["stderr_tail"] += "\n[killed by signal %d%s]" % (
                -rc, ", timeout %ds" % self.timeout if -rc == signal.SIGKILL else "")
        return m


def step_name(m):
    return {"init": "repo init", "backup": m["scenario"] + " backup"}.get(m["kind"], m["kind"])


def kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def locate_restored(target, src):
    """Where a tool put the restored tree: restic/borg keep the absolute path under
    the target, cp puts the basename, a tool may also restore the contents directly."""
    for cand in (os.path.join(target, src.lstrip("/")), os.path.join(target, os.path.basename(src))):
        if os.path.isdir(cand):
            return cand
    return target


# ----------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args, tools, corpora):
        self.args, self.corpora = args, corpora
        self.workdir = args.workdir
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.runner = Runner(os.path.join(self.workdir, "logs", self.stamp), args.timeout)
        self.tools = tools           # [(Tool, binary)]
        self.measurements = []
        self.failures = []
        self.notes = []

    # -- one measured (or setup) step -------------------------------------------------
    def step(self, tr, scenario, rnd, kind, measured, argv, cwd=None, corpus_bytes=None):
        tag = "r%d-%s-%s-%s" % (rnd, tr.tool.name, scenario, kind)
        log("round %d  %-6s %-8s %s%s" % (rnd + 1, tr.tool.name, scenario, kind,
                                           "" if measured else " (setup, not measured)"))
        m = self.runner.run(argv, tr.env(), cwd, tag)
        m.update(tool=tr.tool.name, scenario=scenario, round=rnd, kind=kind,
                 measured=measured, corpus_bytes=corpus_bytes)
        self.measurements.append(m)
        if m["status"] != "ok":
            self.fail(tr, m, "exit code %d" % m["rc"])
        else:
            log("    wall %.2fs  cpu %.2fs  rss %.1f MiB" % (
                m["wall_s"], m.get("cpu_s", 0), (m["rss_kib"] or 0) / 1024))
        return m

    def fail(self, tr, m, why):
        m["status"] = "FAILED"
        m["failure"] = why
        tr.failed = tr.failed or "%s %s" % (m["scenario"], m["kind"])
        self.failures.append(m)
        loud("%s %s FAILED in round %d: %s\n$ %s\n--- stderr tail ---\n%s" % (
            tr.tool.label, step_name(m), m["round"] + 1, why,
            shlex.join(m["argv"]), m["stderr_tail"].strip()[-1500:]))

    def skip(self, tr, scenario, rnd, kind, measured=True):
        self.measurements.append({"tool": tr.tool.name, "scenario": scenario, "round": rnd,
                                  "kind": kind, "status": "skipped", "measured": measured,
                                  "reason": "earlier failure: " + tr.failed})

    def backup(self, tr, scenario, rnd, measured, src, corpus_bytes):
        if tr.failed:
            return self.skip(tr, scenario, rnd, "backup", measured)
        tr.ctx["n"] += 1
        argv = tr.command("backup", src=src, parent=os.path.dirname(src),
                          name=os.path.basename(src))
        m = self.step(tr, scenario, rnd, "backup", measured, argv, corpus_bytes=corpus_bytes)
        if m["status"] == "ok":
            tr.ctx["last"] = tr.ctx["n"]
            size = du_bytes(tr.ctx["repo"])
            m.update(repo_bytes=size, repo_growth=size - tr.repo_bytes,
                     cache_bytes=tr.cache_bytes())
            tr.repo_bytes = size

    def restore(self, tr, rnd, src, expected):
        if tr.failed:
            return self.skip(tr, "restore", rnd, "restore")
        target = os.path.join(self.workdir, "restore", tr.tool.name)
        remove(target)
        os.makedirs(target)
        argv = tr.command("restore", src=src, target=target)
        cwd = target if tr.tool.restore_cwd_target else None
        m = self.step(tr, "restore", rnd, "restore", True, argv, cwd,
                      corpus_bytes=manifest_bytes(expected))
        if m["status"] == "ok":
            root = locate_restored(target, src)
            m["restored_root"] = os.path.relpath(root, target)
            m["verify"] = compare_manifests(expected, tree_manifest(root))
            if not m["verify"]["ok"]:
                self.fail(tr, m, "restored tree differs from source: %s" % json.dumps(m["verify"]))
            else:
                log("    verified: %d files identical" % m["verify"]["files"])
        remove(target)

    def init_repo(self, tr, rnd):
        tr.reset()
        if tr.tool.uses_password:
            write_secret(tr.pw)
        if tr.tool.init:
            self.step(tr, "init", rnd, "init", False, tr.command("init"))
            tr.repo_bytes = du_bytes(tr.ctx["repo"])

    # -- the normal mode --------------------------------------------------------------
    def run_rounds(self, pristine, seed):
        sel = self.args.scenarios
        work = os.path.join(self.workdir, "work", "corpus")
        for rnd in range(self.args.runs):
            log("=== round %d/%d" % (rnd + 1, self.args.runs))
            remove(os.path.dirname(work))
            os.makedirs(os.path.dirname(work))
            run_checked(["cp", "-a", pristine, work])
            k = rnd % len(self.tools)   # rotate the order so no tool always goes first
            runs = [ToolRun(t, b, self.workdir) for t, b in self.tools[k:] + self.tools[:k]]
            runs = [tr for tr in runs if set(tr.tool.scenarios) & set(sel)]
            for tr in runs:
                self.init_repo(tr, rnd)
            nbytes = self.corpus_bytes
            for scenario in BACKUP_SCENARIOS:
                # a repository needs its first backup even when only later steps are measured
                if scenario not in sel and scenario != "initial":
                    continue
                if scenario == "change":
                    self.notes.append("round %d: %s" % (rnd + 1, self.corpora.mutate(work, seed)))
                    nbytes = tree_bytes(work)
                for tr in runs:
                    if scenario in tr.tool.scenarios and tr.tool.backup:
                        self.backup(tr, scenario, rnd, scenario in sel, work, nbytes)
            if "restore" in sel:
                expected = tree_manifest(work)
                for tr in runs:
                    if tr.tool.restore:
                        self.restore(tr, rnd, work, expected)

    # -- the --scale mode -------------------------------------------------------------
    def run_scale(self, sources):
        """Initial backup only, of each source (label -> (dir, bytes)), per round."""
        for rnd in range(self.args.runs):
            for label, (src, nbytes) in sources.items():
                for t, b in self.tools:
                    tr = ToolRun(t, b, self.workdir)
                    self.init_repo(tr, rnd)
                    self.backup(tr, label, rnd, True, src, nbytes)
                    remove(tr.dir)


# ----------------------------------------------------------------------------- report


def med(ms, key):
    vals = [m[key] for m in ms if m.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarize(measurements):
    """(tool, scenario) -> medians over successful measured runs + failure counts."""
    groups = {}
    for m in measurements:
        if m.get("kind") == "init" or m.get("measured") is False:
            continue
        groups.setdefault((m["tool"], m["scenario"]), []).append(m)
    out = {}
    for key, ms in groups.items():
        ok = [m for m in ms if m["status"] == "ok"]
        s = {"runs": len(ms), "ok": len(ok),
             "failed": sum(m["status"] == "FAILED" for m in ms),
             "skipped": sum(m["status"] == "skipped" for m in ms)}
        for k in ("wall_s", "flush_s", "cpu_s", "cpu_user_s", "cpu_sys_s", "rss_kib",
                  "repo_bytes", "repo_growth", "cache_bytes", "corpus_bytes"):
            s[k] = med(ok, k)
        walls = [m["wall_s"] for m in ok]
        s["wall_min"], s["wall_max"] = (min(walls), max(walls)) if walls else (None, None)
        s["wall_flush_s"] = statistics.median(m["wall_s"] + m["flush_s"] for m in ok) if ok else None
        s["rss_max_kib"] = max((m["rss_kib"] for m in ok if m.get("rss_kib")), default=None)
        out[key] = s
    return out


def f_s(v):
    return "-" if v is None else "%.2f" % v


def f_mib(v, signed=False):
    return "-" if v is None else (("%+.1f" if signed else "%.1f") % (v / MiB))


def md_table(headers, rows):
    def row(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
    return "\n".join([row(headers), "|" + "---|" * len(headers)] + [row(r) for r in rows])


def scenario_table(summary, tools, scenario, labels):
    rows = []
    for name in tools:
        s = summary.get((name, scenario))
        if not s:
            continue
        status = "%d/%d ok" % (s["ok"], s["runs"])
        if s["failed"]:
            status += ", **FAILED %d/%d**" % (s["failed"], s["runs"])
        if s["skipped"]:
            status += ", **skipped %d/%d** (an earlier step failed)" % (s["skipped"], s["runs"])
        thr = (s["corpus_bytes"] / MiB / s["wall_s"]) if s["ok"] and s["wall_s"] else None
        row = [labels[name], status, f_s(s["wall_s"]),
               "%s–%s" % (f_s(s["wall_min"]), f_s(s["wall_max"])), f_s(s["wall_flush_s"]),
               "-" if thr is None else "%.0f" % thr, f_s(s["cpu_s"]),
               "-" if s["rss_kib"] is None else "%.1f" % (s["rss_kib"] / 1024)]
        if scenario != "restore":
            row += [f_mib(s["repo_bytes"]), f_mib(s["repo_growth"], True), f_mib(s["cache_bytes"])]
        rows.append(row)
    headers = ["tool", "runs", "wall s (median)", "wall min–max", "wall+sync s", "MiB/s",
               "CPU s", "peak RSS MiB"]
    if scenario != "restore":
        headers += ["repo MiB after", "growth MiB", "cache MiB (separate)"]
    return md_table(headers, rows) if rows else "_no tool ran this scenario_"


RATIOS = (  # label, numerator tool, denominator tool, scenario, summary field
    ("{o}/restic initial backup wall", "restic", "initial", "wall_s"),
    ("{o}/borg initial backup wall", "borg", "initial", "wall_s"),
    ("{o}/(tar|zstd) initial backup wall", "tar", "initial", "wall_s"),
    ("{o}/restic initial backup CPU", "restic", "initial", "cpu_s"),
    ("{o}/restic no-change backup wall", "restic", "nochange", "wall_s"),
    ("{o}/restic after-change backup wall", "restic", "change", "wall_s"),
    ("{o}/restic repo growth after change", "restic", "change", "repo_growth"),
    ("{o}/cp restore wall", "cp", "restore", "wall_s"),
    ("{o}/restic repo size after first backup", "restic", "initial", "repo_bytes"),
    ("{o}/restic peak RSS, initial backup", "restic", "initial", "rss_kib"),
    ("{o}/restic peak RSS, max over all steps", "restic", "*", "rss_max_kib"),
)


def ratio_value(summary, ours, other, scenario, field):
    def val(tool):
        if scenario == "*":
            mine = [s for (t, _), s in summary.items() if t == tool]
            vals = [s[field] for s in mine if s[field]]
            if not mine:
                return None, "%s not run" % tool
            if not vals:
                return None, "no %s data" % tool
            if any(s["failed"] or s["skipped"] for (t, _), s in summary.items() if t == tool):
                return None, "%s FAILED" % tool
            return max(vals), None
        s = summary.get((tool, scenario))
        if not s:
            return None, "%s not run" % tool
        if s["failed"] or s["skipped"]:
            return None, "%s FAILED" % tool
        return s[field], None
    (a, ea), (b, eb) = val(ours), val(other)
    if ea or eb:
        return None, "n/a (%s)" % "; ".join(e for e in (ea, eb) if e)
    if not b:
        return None, "n/a (zero denominator)"
    return a / b, "%.2f" % (a / b)


def ratios(summary, ours):
    out = []
    for label, other, scenario, field in RATIOS:
        v, text = ratio_value(summary, ours, other, scenario, field)
        out.append({"ratio": label.format(o=ours), "value": v, "text": text})
    return out


def render(bench, header, summary, ratio_rows, scale):
    labels = {t.name: t.label for t in TOOLS}
    order = [t.name for t in TOOLS]
    L = ["# cairn repository benchmark", ""]
    L += ["- %s: %s" % (k, v) for k, v in header.items()]
    L.append("")
    if bench.failures:
        L += ["## FAILURES", ""]
        for m in bench.failures:
            err = m["stderr_tail"].strip().splitlines()[-15:]
            L += ["- **%s %s, round %d: %s**" % (labels[m["tool"]], step_name(m), m["round"] + 1,
                                                 m["failure"]),
                  "  `$ %s`" % shlex.join(m["argv"]), ""]
            L += ["  ```", *("  " + l for l in err), "  ```", ""] if err else []
    scenarios = scale if scale else [s for s in SCENARIOS if s in bench.args.scenarios]
    for sc in scenarios:
        L += ["## %s" % (TITLES.get(sc) or "initial backup of %s" % sc), "",
              scenario_table(summary, order, sc, labels), ""]
    if scale:
        L += ["## Peak RSS vs corpus size", ""]
        rows = []
        for name in order:
            vals = [summary.get((name, sc), {}).get("rss_kib") for sc in scale]
            if any(v is not None for v in vals):
                growth = ("%.2f" % (vals[-1] / vals[0])) if all(vals) else "n/a"
                rows.append([labels[name]] + ["-" if v is None else "%.1f" % (v / 1024)
                                              for v in vals] + [growth])
        L += [md_table(["tool"] + ["RSS MiB, %s" % sc for sc in scale] + ["largest/smallest"],
                       rows), ""]
    else:
        L += ["## Ratios (%s / other, medians; < 1 means %s is faster/smaller)" % (
            bench.args.ours, bench.args.ours), "",
            md_table(["ratio", "value"], [[r["ratio"], r["text"]] for r in ratio_rows]), ""]
    if bench.notes:
        L += ["## Notes", ""] + ["- " + n for n in bench.notes] + [""]
    L += ["Columns: wall = median elapsed time of the command; wall+sync adds the `sync` "
          "right after it (data the tool left dirty in the page cache); CPU = user+sys of "
          "the command and all descendants; peak RSS = max RSS of any process in the "
          "command's tree (%s); repo = apparent bytes on disk (`du -sb`), growth vs the "
          "previous step (the first backup vs the freshly initialised repo); caches are "
          "outside the repository and listed separately. Every run: see the raw JSON." % (
              "GNU time, floor %.1f MiB" % (bench.runner.floor["gnu-time"] / 1024)
              if "gnu-time" in bench.runner.floor else
              "wait4, floor %.1f MiB = harness RSS" % (bench.runner.floor["wait4"] / 1024)), ""]
    return "\n".join(L)


def host_info(workdir):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    fs = subprocess.run(["df", "-T", workdir], capture_output=True, text=True).stdout.split("\n")
    fstype = fs[1].split()[1] if len(fs) > 1 and fs[1].split() else "?"
    return ("%d (nproc); %s; %.1f GiB RAM; Linux %s; workdir fs %s; load avg at start %s" % (
        len(os.sched_getaffinity(0)), cpu, mem, platform.release(), fstype,
        " ".join("%.2f" % x for x in os.getloadavg())))


# ----------------------------------------------------------------------------- main


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="rounds; medians are reported (default 5)")
    ap.add_argument("--tools", default=",".join(TOOL_NAMES),
                    help="subset of %s" % ",".join(TOOL_NAMES))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help="subset of %s" % ",".join(SCENARIOS))
    ap.add_argument("--workdir", default="/var/tmp/cairn-bench",
                    help="corpus cache, working copy, repositories (default /var/tmp/cairn-bench)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"),
                    help="where the report and raw JSON go (default bench/repo/results)")
    ap.add_argument("--seed", type=int, default=SEED_DEFAULT)
    ap.add_argument("--corpus-script",
                    default=os.path.join(os.path.dirname(REPO_ROOT), "shared", "bench", "make_corpus.py"))
    ap.add_argument("--cairnctl", default=os.path.join(REPO_ROOT, "build", "cairnctl", "cairnctl"))
    ap.add_argument("--restic", default="/usr/bin/restic")
    ap.add_argument("--borg", default="/usr/bin/borg")
    ap.add_argument("--scale", type=int, metavar="K",
                    help="only: initial-backup peak RSS of cairn and restic on 1x vs a K-times corpus")
    ap.add_argument("--timeout", type=int, default=7200, help="per command, seconds")
    ap.add_argument("--small", action="store_true",
                    help="tiny synthetic corpus (~58 MB) for smoke-testing the harness")
    ap.add_argument("--ours", default="cairn", choices=TOOL_NAMES,
                    help="numerator of the ratios (harness testing without cairnctl)")
    a = ap.parse_args(argv)
    a.tools = [t for t in a.tools.split(",") if t]
    a.scenarios = [s for s in a.scenarios.split(",") if s]
    for t in a.tools:
        if t not in TOOL_NAMES:
            ap.error("unknown tool %r" % t)
    for s in a.scenarios:
        if s not in SCENARIOS:
            ap.error("unknown scenario %r" % s)
    if a.runs < 1 or (a.scale is not None and a.scale < 2):
        ap.error("--runs must be >= 1 and --scale >= 2")
    a.workdir = os.path.realpath(a.workdir)
    return a


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.makedirs(args.workdir, exist_ok=True)
    tools, skipped = [], []
    wanted = [t for t in TOOLS if t.name in args.tools and
              (not args.scale or t.name in ("cairn", "restic"))]
    for t in wanted:
        binary, why = resolve_binary(t, args)
        if binary:
            tools.append((t, binary))
        else:
            skipped.append("%s (%s)" % (t.label, why))
            loud("SKIPPING %s: %s" % (t.label, why))
    if not tools:
        sys.exit("no tool to run")

    corpora = Corpora(args.workdir, args.corpus_script, args.small)
    pristine, rows = corpora.pristine(args.seed)
    bench = Bench(args, tools, corpora)
    bench.corpus_bytes = manifest_bytes(rows)
    header = {
        "command": shlex.join([sys.executable] + sys.argv),
        "date": now_iso(),
        "host": host_info(args.workdir),
        "versions": "; ".join("%s: %s" % (t.label, tool_version(fill(t.version, {"bin": b})))
                              for t, b in tools if t.version) +
        "; python %s" % platform.python_version(),
        "corpus": "%s: %d files, %.1f MiB (%d bytes), seed %d%s" % (
            pristine, len(rows), bench.corpus_bytes / MiB, bench.corpus_bytes, args.seed,
            " (SMALL smoke-test corpus)" if args.small else ""),
        "runs": "%d round(s), medians; tools %s; scenarios %s" % (
            args.runs, ",".join(t.name for t, _ in tools), ",".join(args.scenarios)),
        "peak RSS floor": ", ".join("%s %.1f MiB" % (k, v / 1024)
                                    for k, v in bench.runner.floor.items()),
    }
    if skipped:
        header["SKIPPED tools"] = "**%s**" % "; ".join(skipped)

    scale = None
    if args.scale:
        big, big_rows = corpora.scaled(pristine, args.seed, args.scale)
        scale = ["1x", "%dx" % args.scale]
        header["scale corpus"] = "%s: %d files, %.1f MiB" % (
            big, len(big_rows), manifest_bytes(big_rows) / MiB)
        bench.run_scale({"1x": (pristine, bench.corpus_bytes),
                         scale[1]: (big, manifest_bytes(big_rows))})
    else:
        bench.run_rounds(pristine, args.seed)

    summary = summarize(bench.measurements)
    ratio_rows = [] if scale else ratios(summary, args.ours)
    report = render(bench, header, summary, ratio_rows, scale)
    print(report)
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, "%s%s" % (bench.stamp, "-small" if args.small else ""))
    with open(base + "-report.md", "w") as f:
        f.write(report + "\n")
    with open(base + "-raw.json", "w") as f:
        json.dump({"header": header, "measurements": bench.measurements,
                   "summary": [dict(tool=k[0], scenario=k[1], **v) for k, v in summary.items()],
                   "ratios": ratio_rows, "notes": bench.notes,
                   "rss_floor_kib": bench.runner.floor,
                   "harness_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss},
                  f, indent=1)
    log("report: %s-report.md  raw: %s-raw.json" % (base, base))
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
