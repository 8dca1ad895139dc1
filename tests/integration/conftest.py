"""Fixtures for the integration tests: they drive the real `cairnctl` binary.

The binary is $CAIRN_BUILD_DIR/cairnctl/cairnctl (ctest sets CAIRN_BUILD_DIR), or
<repo root>/build/cairnctl/cairnctl when run by hand without it.
"""
import json
import os
import pathlib
import shutil
import socket
import stat
import subprocess
import tempfile

import pytest

# ---- sanitizer reports (docs/testing.md) -----------------------------------
# In a sanitizer build (CAIRN_SANITIZE) every cairnctl, controller and agent
# these tests start writes its ASan/LSan/UBSan/TSan report to a file here
# (inherited environment), not only to a log nobody reads. A report
# fails the test that was running, named in the failure; one written after the
# last test (a daemon's exit) fails the session.
_OWN_SANITIZER_DIR = not os.environ.get("CAIRN_SANITIZER_LOG_DIR")
SANITIZER_DIR = pathlib.Path(os.environ.get("CAIRN_SANITIZER_LOG_DIR") or tempfile.mkdtemp(prefix="cairn-san-"))
SANITIZER_DIR.mkdir(parents=True, exist_ok=True)
# verify_asan_link_order=0: a few tests preload a small fault-injection shim
# (LD_PRELOAD) into cairnctl; ASan would refuse to start behind it.
for _var, _extra in (("ASAN_OPTIONS", "detect_leaks=1:verify_asan_link_order=0"), ("UBSAN_OPTIONS", "print_stacktrace=1"),
                     ("TSAN_OPTIONS", "second_deadlock_stack=1"), ("LSAN_OPTIONS", "")):
    _opts = [o for o in (os.environ.get(_var, ""), _extra, f"log_path={SANITIZER_DIR}/{_var.split('_')[0].lower()}")
             if o]
    os.environ[_var] = ":".join(_opts)
_reported = set()


def _new_sanitizer_reports():
    if not SANITIZER_DIR.is_dir():
        # An interrupted run (Ctrl-C) finishes the session before the running
        # test's fixtures are torn down: the empty directory is gone by then,
        # and failing here would lose pytest's report of that test.
        return []
    new = sorted(p for p in SANITIZER_DIR.iterdir() if p.name not in _reported)
    _reported.update(p.name for p in new)
    return new


def _describe(reports):
    return "\n".join(f"---- {p}\n{p.read_text(errors='replace')[:6000]}" for p in reports)


@pytest.fixture(autouse=True)
def _no_sanitizer_reports():
    _new_sanitizer_reports()  # one left by an earlier test was reported there
    yield
    reports = _new_sanitizer_reports()
    if reports:
        pytest.fail(f"sanitizer report(s) from a cairn process during this test:\n{_describe(reports)}", pytrace=False)


def pytest_sessionfinish(session, exitstatus):
    reports = _new_sanitizer_reports()
    if reports:
        print(f"\nsanitizer report(s) written after the last test:\n{_describe(reports)}")
        session.exitstatus = 1
    if _OWN_SANITIZER_DIR and not any(SANITIZER_DIR.iterdir()):
        SANITIZER_DIR.rmdir()  # reports are kept; an empty temp dir is not
    _drop_basetemp_of_a_green_run(session)


def _drop_basetemp_of_a_green_run(session):
    """A run whose tests all passed leaves nothing behind in its --basetemp.

    ctest gives each test a basetemp of its own under build*/pytest-tmp; kept,
    a whole suite's repositories, servers' data and logs came to 7.5 GB per
    build (CI ran out of disk in the sanitizer stage). A failed run's directory
    is kept for its logs; CAIRN_KEEP_TEST_DIRS=1 keeps every one.
    """
    base = session.config.option.basetemp
    if not base or session.exitstatus != 0 or os.environ.get("CAIRN_KEEP_TEST_DIRS") == "1":
        return

    def writable_then_retry(func, path, _exc):
        # a test may leave a directory read-only (the full-disk and permission tests)
        try:
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
            func(path)
        except OSError:
            pass

    shutil.rmtree(base, onerror=writable_then_retry)

ROOT = pathlib.Path(__file__).resolve().parents[2]
if os.environ.get("CAIRN_BUILD_DIR"):
    BIN = pathlib.Path(os.environ["CAIRN_BUILD_DIR"]) / "cairnctl" / "cairnctl"
else:
    BIN = ROOT / "build" / "cairnctl" / "cairnctl"

# Commands whose first two words are subcommands ("key add", "repair index").
TWO_WORD = {"key", "repair"}

EXIT_OK, EXIT_ERROR, EXIT_PARTIAL, EXIT_NO_REPO, EXIT_LOCKED, EXIT_WRONG_KEY = 0, 1, 3, 10, 11, 12


def write_secret(path, text, mode=0o600):
    path = pathlib.Path(path)
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return path


class Cairn:
    """Runs `cairnctl repo ...` against one repository with one password file."""

    def __init__(self, repo, password_file, prefix=()):
        self.repo = pathlib.Path(repo)
        self.password_file = pathlib.Path(password_file)
        self.prefix = list(prefix)  # e.g. setpriv ... to run as another user

    def argv(self, *args, password_file=None, repo=None):
        args = [os.fspath(a) for a in args]
        n = 2 if args and args[0] in TWO_WORD else 1
        pw = self.password_file if password_file is None else password_file
        opts = ["--repo", os.fspath(self.repo if repo is None else repo)]
        if pw:
            opts += ["--password-file", os.fspath(pw)]
        return self.prefix + [os.fspath(BIN), "repo"] + args[:n] + opts + args[n:]

    def __call__(self, *args, input=None, password_file=None, repo=None, timeout=300, env=None):
        """Returns (rc, stdout, stderr) as text (undecodable bytes replaced)."""
        p = subprocess.run(self.argv(*args, password_file=password_file, repo=repo), input=input,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, env=env)
        return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")

    def popen(self, *args, password_file=None, **kw):
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(self.argv(*args, password_file=password_file), **kw)

    def ok(self, *args, **kw):
        rc, out, err = self(*args, **kw)
        assert rc == 0, f"cairnctl repo {' '.join(map(str, args))} exited {rc}\nstdout: {out[-3000:]}\nstderr: {err[-3000:]}"
        return out, err

    def init(self):
        return self.ok("init")

    def backup(self, *paths, extra=(), expect=0, **kw):
        """Backs up with --json; returns the summary line (a dict) and stderr."""
        # Options after the paths: see test_tag_before_paths for the documented order.
        rc, out, err = self("backup", "--json", *paths, *extra, **kw)
        assert rc == expect, f"backup exited {rc}, expected {expect}\nstdout: {out[-3000:]}\nstderr: {err[-3000:]}"
        return summary_of(out), err

    def snapshots(self, **kw):
        out, _ = self.ok("snapshots", "--json", **kw)
        return json.loads(out)

    def restore(self, snapshot, target, extra=(), **kw):
        return self("restore", snapshot, "--target", target, *extra, **kw)


def json_lines(text):
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def summary_of(stdout):
    sums = [j for j in json_lines(stdout) if j.get("message_type") == "summary"]
    assert sums, f"no summary line in: {stdout[-2000:]}"
    return sums[-1]


def restored_path(target, src):
    """Where a source path lands under a restore target: restore recreates the
    absolute source path under the target (target/abs/path/of/src)."""
    src = os.fsencode(os.path.abspath(src))
    target = os.fsencode(target)
    full = os.path.join(target, src.lstrip(b"/"))
    if os.path.lexists(full):
        return full
    base = os.path.join(target, os.path.basename(src))
    if os.path.lexists(base):
        return base
    raise AssertionError(f"restore of {src!r} into {target!r} produced neither {full!r} nor {base!r}; "
                         f"target holds {sorted(os.listdir(target)) if os.path.isdir(target) else 'nothing'}")


def dir_listing(path):
    """Every file under path with its size and mtime: equal listings mean nothing was written."""
    res = {}
    for dp, dns, fns in os.walk(path):
        for n in dns + fns:
            p = os.path.join(dp, n)
            st = os.lstat(p)
            if stat.S_ISDIR(st.st_mode):  # a lock taken and released touches locks/ only
                res[os.path.relpath(p, path)] = (stat.S_IFDIR, 0, 0)
            else:
                res[os.path.relpath(p, path)] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, st.st_ino)
    return res


def dir_bytes(path):
    total = 0
    for dp, _, fns in os.walk(path):
        for f in fns:
            try:
                total += os.lstat(os.path.join(dp, f)).st_size
            except FileNotFoundError:  # renamed or removed by a running cairnctl
                pass
    return total


def write_random(path, size, chunk=8 << 20):
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


def file_digest(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _xattrs(p):
    try:
        return {n: os.getxattr(p, n, follow_symlinks=False) for n in os.listxattr(p, follow_symlinks=False)}
    except OSError:
        return {}


def tree_state(root, content=True, times=True, owners=True):
    """Everything a user would compare between a source and its restore, keyed by bytes path."""
    root = os.fsencode(root)
    state = {}
    inode_groups = {}
    for dp, dns, fns in os.walk(root):
        entries = [dp] if dp == root else []
        entries += [os.path.join(dp, n) for n in dns + fns]
        for p in entries:
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            e = {"type": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode), "xattrs": _xattrs(p)}
            if owners:
                e["owner"] = (st.st_uid, st.st_gid)
            if times and not stat.S_ISLNK(st.st_mode):
                e["mtime_ns"] = st.st_mtime_ns
            if stat.S_ISLNK(st.st_mode):
                e["target"] = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                e["size"] = st.st_size
                if content:
                    e["sha256"] = file_digest(p)
                if st.st_nlink > 1:
                    inode_groups.setdefault(st.st_ino, []).append(rel)
            state[rel] = e
    links = sorted(sorted(g) for g in inode_groups.values() if len(g) > 1)
    return state, links


def assert_same_tree(src, dst, **kw):
    a, la = tree_state(src, **kw)
    b, lb = tree_state(dst, **kw)
    missing = sorted(set(a) - set(b))
    extra = sorted(set(b) - set(a))
    assert not missing, f"not restored: {missing}"
    assert not extra, f"restored but not in the source: {extra}"
    diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert not diff, "differences (source, restored):\n" + "\n".join(f"{k!r}: {v[0]} != {v[1]}" for k, v in diff.items())
    assert la == lb, f"hard links differ: source {la}, restored {lb}"


@pytest.fixture
def cairn(tmp_path):
    """An initialised repository in tmp_path/repo with a 0600 password file."""
    pw = write_secret(tmp_path / "pw", "correct horse battery staple")
    c = Cairn(tmp_path / "repo", pw)
    c.init()
    return c


@pytest.fixture
def uninit_cairn(tmp_path):
    pw = write_secret(tmp_path / "pw", "correct horse battery staple")
    return Cairn(tmp_path / "repo", pw)


@pytest.fixture
def open_dir():
    """A directory every user can traverse (pytest's tmp_path is 0700 for root)."""
    d = tempfile.mkdtemp(prefix="cairn-it-", dir="/tmp")
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def hostname():
    return socket.gethostname()


@pytest.fixture(autouse=True)
def _binary_exists():
    # Checked per test, not at collection: cmake collects the tests before the binary is built.
    if not BIN.exists():
        pytest.fail(f"cairnctl binary not found at {BIN}; build it or set CAIRN_BUILD_DIR")
