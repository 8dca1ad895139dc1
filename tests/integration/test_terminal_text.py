"""File names that hold control characters or bytes that are not UTF-8, through
`cairnctl repo`: never raw to the terminal (progress line, ls, warnings), and
exact in `ls --json` (name_b64 / path_b64 where the bytes are not UTF-8)."""
import base64
import os
import pty
import shutil
import subprocess

import pytest

from conftest import EXIT_PARTIAL, json_lines

# Reads of a file whose name holds "slow-read" take 200 ms each (the progress
# line shows it), and reads of "fail-now" files fail (a warning names them).
SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/types.h>

static int named(int fd, const char* what) {
  char link[64], path[4096];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n < 0) return 0;
  path[n] = 0;
  return strstr(path, what) != NULL;
}
typedef ssize_t (*pread_fn)(int, void*, size_t, off_t);
static ssize_t call(const char* name, int fd, void* buf, size_t n, off_t off) {
  if (named(fd, "fail-now")) { errno = EIO; return -1; }
  if (named(fd, "slow-read")) usleep(200000);
  pread_fn real = (pread_fn)dlsym(RTLD_NEXT, name);
  return real(fd, buf, n, off);
}
ssize_t pread(int fd, void* buf, size_t n, off_t off) { return call("pread", fd, buf, n, off); }
ssize_t pread64(int fd, void* buf, size_t n, off_t off) { return call("pread64", fd, buf, n, off); }
"""

EVIL = b"t\x1b]0;owned\x07\x1b[2J\nline \xe2\x80\xae"  # title, clear screen, newline, bidi override


@pytest.fixture
def slow_shim(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler for the fault-injection shim")
    c = tmp_path / "slow.c"
    c.write_text(SHIM)
    so = tmp_path / "slow.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(so), str(c), "-ldl"], check=True)
    return so


def assert_no_controls(b):
    for c in (b"\x1b", b"\x07", b"\xe2\x80\xae"):
        assert c not in b, b


def test_names_escaped_on_the_terminal_and_exact_in_json(cairn, tmp_path, slow_shim):
    src = tmp_path / "src"
    (src / "slow").mkdir(parents=True)
    srcb = os.fsencode(src)
    with open(srcb + b"/slow/" + EVIL + b" slow-read", "wb") as f:
        f.write(os.urandom(16 << 20))
    with open(srcb + b"/" + EVIL + b" fail-now", "wb") as f:
        f.write(b"x" * 1000)
    bad = b"latin1-\xe9t\xe9\xff.txt"  # not UTF-8
    with open(srcb + b"/" + bad, "wb") as f:
        f.write(b"bytes\n")

    # The progress line on a terminal (stderr is a pty): the slow file alone,
    # so it is the current file while the line is drawn.
    master, slave = pty.openpty()
    env = dict(os.environ, LD_PRELOAD=str(slow_shim))
    p = subprocess.Popen(cairn.argv("backup", src / "slow"), stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO once the child closed the pty
            break
        if not chunk:
            break
        err += chunk
    out, _ = p.communicate(timeout=120)
    os.close(master)
    assert p.returncode == 0, (out, err)
    assert_no_controls(err)
    assert_no_controls(out)
    assert b"\\x1b[2J\\nline \\u202e slow-read" in err, err  # the progress line, its start maybe cut

    # The warning that names the file that could not be read.
    p = subprocess.run(cairn.argv("backup", src), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=300)
    assert p.returncode == EXIT_PARTIAL, p
    assert_no_controls(p.stderr)
    assert b"could not back up '" in p.stderr and b"\\x1b[2J\\nline \\u202e fail-now'" in p.stderr, p.stderr

    # ls: escaped; the name that is not UTF-8 in hex.
    rc, out, err = cairn("ls", "latest")
    assert rc == 0, err
    assert "\x1b" not in out and "\u202e" not in out, repr(out)
    assert "\\x1b]0;owned\\x07\\x1b[2J\\nline \\u202e slow-read" in out, out
    assert "latin1-\\xe9t\\xe9\\xff.txt" in out, out
    rc, out, err = cairn("ls", "--long", "latest")
    assert rc == 0 and "\x1b" not in out and "\\xff.txt" in out, out

    # ls --json: exact bytes back, as the tree keeps them.
    p = subprocess.run(cairn.argv("ls", "--json", "latest"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 0, p.stderr
    entries = json_lines(p.stdout.decode())
    names = {}
    for e in entries:
        exact = base64.b64decode(e["name_b64"]) if "name_b64" in e else e["name"].encode()
        path = base64.b64decode(e["path_b64"]) if "path_b64" in e else e["path"].encode()
        assert path.endswith(b"/" + exact), e
        names[exact] = e
    assert bad in names and "name_b64" in names[bad] and "path_b64" in names[bad], names.keys()
    assert names[bad]["path"].endswith("latin1-\ufffdt\ufffd\ufffd.txt"), names[bad]  # readable form kept
    evil = EVIL + b" slow-read"
    assert evil in names and "name_b64" not in names[evil], names.keys()  # valid UTF-8: the name as it is
    assert names[evil]["name"] == evil.decode()
