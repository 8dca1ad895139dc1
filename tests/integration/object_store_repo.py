"""`cairnctl repo` against one object-store URL (S3 or Azure), with a password
file and a storage credentials file, and nothing of the caller's environment
that names other credentials (test_object_storage.py, test_object_storage_azure.py)."""
import os
import pathlib
import secrets
import subprocess

from conftest import BIN, write_secret

PASSWORD = "correct horse battery staple"
TWO_WORD = ("key",)


class StoreRepo:
    def __init__(self, url, tmp, creds, clear=(), env=None):
        """clear: environment variables dropped for every run; env: ones set for every run."""
        self.url, self.tmp, self.creds = url, pathlib.Path(tmp), creds
        self.clear, self.env = tuple(clear), dict(env or {})
        self.pw = write_secret(self.tmp / f"pw-{secrets.token_hex(3)}", PASSWORD)

    def run(self, *args, creds=None, env=None, timeout=300):
        args = [os.fspath(a) for a in args]
        n = 2 if args[0] in TWO_WORD else 1
        cmd = [os.fspath(BIN), "repo"] + args[:n] + ["--repo", self.url, "--password-file", os.fspath(self.pw)]
        c = self.creds if creds is None else creds
        if c:
            cmd += ["--storage-credentials", os.fspath(c)]
        e = dict(os.environ, HOME=os.fspath(self.tmp))  # no ~/.aws of the machine's
        for k in self.clear:
            e.pop(k, None)
        e.update(self.env)
        e.update(env or {})
        p = subprocess.run(cmd + args[n:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, env=e)
        return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")

    def ok(self, *args, **kw):
        rc, out, err = self.run(*args, **kw)
        assert rc == 0, f"cairnctl repo {args[0]} exited {rc}\nstdout: {out[-3000:]}\nstderr: {err[-3000:]}"
        return out, err
