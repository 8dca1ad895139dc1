"""A real Azure Blob server for the Azure backend's tests: Azurite's
`azurite-blob`, installed once from the npm registry into
/var/cache/cairn/azurite by scripts/fetch-azurite.sh (Debian does not package
it). One process on a loopback port chosen here, data in the test's tmp dir,
strict (no --loose), killed by its PID (its process group, server_proc.py).

Accounts: the well-known devstoreaccount1 with its published key, and
"cairntest" with a key made here (AZURITE_ACCOUNTS), so the tests do not
depend on the published key alone.
"""
import base64
import glob
import os
import pathlib
import secrets

import pytest

from ports import free_port
from server_proc import ServerProc, http_answers

CACHE = os.environ.get("CAIRN_AZURITE_CACHE", "/var/cache/cairn/azurite")
DEV_ACCOUNT = "devstoreaccount1"
# Published in Azurite's README: not a secret.
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_blob():
    found = sorted(glob.glob(os.path.join(CACHE, "*", "node_modules", ".bin", "azurite-blob")))
    found = [a for a in found if os.path.exists(os.path.join(a.split("/node_modules/")[0], ".complete"))]
    if not found:
        pytest.fail(f"Azurite is not installed under {CACHE}: run 'bash scripts/fetch-azurite.sh' "
                    "(scripts/install-deps.sh does)")
    return found[-1]


def write_credentials(path, **kv):
    """A cairn storage credentials file (mode 0600) of KEY=VALUE lines."""
    path = pathlib.Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{k}={v}\n" for k, v in kv.items()))
    return path


class Azurite(ServerProc):
    name = "Azurite"

    def __init__(self, base):
        self.base = pathlib.Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.data = self.base / "data"
        self.data.mkdir(exist_ok=True)
        super().__init__(self.base / "azurite.log")
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.keys = {DEV_ACCOUNT: DEV_KEY, "cairntest": base64.b64encode(secrets.token_bytes(64)).decode()}

    def start(self, timeout=60):
        args = [azurite_blob(), "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location", str(self.data),
                "--silent", "--debug", str(self.base / "debug.log")]
        env = dict(os.environ, AZURITE_ACCOUNTS=";".join(f"{a}:{k}" for a, k in self.keys.items()))
        return self.spawn(args, lambda: http_answers(self.port), timeout, env=env)

    def url(self, container, prefix="", account=DEV_ACCOUNT):
        u = f"azure:{self.endpoint}/{account}/{container}"
        return u + (f"/{prefix}" if prefix else "")

    def credentials(self, path, account=DEV_ACCOUNT):
        return write_credentials(path, account_key=self.keys[account])

    def connection_string(self, account=DEV_ACCOUNT):
        return (f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={self.keys[account]};"
                f"BlobEndpoint={self.endpoint}/{account};")

    def account_sas(self, account, permissions, hours=2):
        """An account SAS (Blob service; service, container and object resource types) signed with the
        account key, as the Azure SDKs make it (version 2020-12-06 and later string-to-sign)."""
        import datetime
        import hashlib
        import hmac
        import urllib.parse
        start = (datetime.datetime.utcnow() - datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
        expiry = (datetime.datetime.utcnow() + datetime.timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
        version = "2021-08-06"
        sts = "\n".join([account, permissions, "b", "sco", start, expiry, "", "http,https", version, "", ""])
        sig = base64.b64encode(hmac.new(base64.b64decode(self.keys[account]), sts.encode(), hashlib.sha256).digest())
        q = {"sv": version, "ss": "b", "srt": "sco", "sp": permissions, "st": start, "se": expiry, "spr": "http,https",
             "sig": sig.decode()}
        return urllib.parse.urlencode(q)

    def blobs(self, container, prefix="", account=DEV_ACCOUNT):
        """Names and sizes under prefix, listed with a SAS made here (from outside cairn)."""
        import re
        import urllib.error
        import urllib.request
        sas = self.account_sas(account, "rl", hours=1)
        out, marker = {}, ""
        while True:
            url = (f"{self.endpoint}/{account}/{container}?restype=container&comp=list&prefix="
                   f"{prefix}&marker={marker}&{sas}")
            try:
                body = urllib.request.urlopen(url, timeout=30).read().decode()
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    return {}
                raise
            for name, size in re.findall(r"<Blob><Name>([^<]*)</Name>.*?<Content-Length>(\d+)</Content-Length>", body):
                out[name] = int(size)
            m = re.search(r"<NextMarker>([^<]+)</NextMarker>", body)
            if not m:
                return out
            marker = m.group(1)
