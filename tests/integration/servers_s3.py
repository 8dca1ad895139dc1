"""A real S3-compatible store for the object-storage tests: SeaweedFS
(`weed server -s3`), built once from the Go module proxy into
/var/cache/cairn/seaweedfs by scripts/fetch-seaweedfs.sh (Debian does not
package it). One process on loopback ports chosen here, data in the test's
tmp dir, authentication on (a request signed with a wrong secret is refused),
killed by its PID (server_proc.py).

Identities: "admin" may do everything (the controller's role); "reader" may
only read and list. A third role, an agent that may add but not delete, is
made by tests/integration/s3_proxy.py in front of the store (SeaweedFS's
"Write" action includes deleting).
"""
import glob
import json
import os
import pathlib
import secrets

from ports import free_port
from server_proc import ServerProc, http_answers

CACHE = os.environ.get("CAIRN_SEAWEEDFS_CACHE", "/var/cache/cairn/seaweedfs")


def weed_binary():
    found = sorted(glob.glob(os.path.join(CACHE, "*", "weed")))
    found = [w for w in found if os.path.exists(os.path.join(os.path.dirname(w), ".complete"))]
    if not found:
        import pytest  # the benchmark (bench/repo/s3.py) uses this module without pytest
        pytest.fail(f"SeaweedFS is not built under {CACHE}: run 'bash scripts/fetch-seaweedfs.sh' "
                    "(scripts/install-deps.sh does)")
    return found[-1]


def write_credentials(path, access_key, secret_key, **settings):
    """A cairn storage credentials file (mode 0600)."""
    path = pathlib.Path(path)
    lines = [f"access_key_id={access_key}", f"secret_access_key={secret_key}"]
    lines += [f"{k}={v}" for k, v in settings.items()]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


class SeaweedFS(ServerProc):
    name = "SeaweedFS"

    def __init__(self, base):
        self.base = pathlib.Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.data = self.base / "data"
        self.data.mkdir(exist_ok=True)
        super().__init__(self.base / "weed.log")
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.keys = {
            "admin": ("AKADMIN" + secrets.token_hex(6).upper(), secrets.token_urlsafe(30)),
            "reader": ("AKREADER" + secrets.token_hex(6).upper(), secrets.token_urlsafe(30)),
        }
        self.config = self.base / "s3.json"
        self.config.write_text(json.dumps({"identities": [
            {"name": "admin", "credentials": [{"accessKey": self.keys["admin"][0], "secretKey": self.keys["admin"][1]}],
             "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            {"name": "reader", "credentials": [{"accessKey": self.keys["reader"][0], "secretKey": self.keys["reader"][1]}],
             "actions": ["Read", "List"]},
        ]}))
        os.chmod(self.config, 0o600)

    def start(self, timeout=90):
        p = [free_port() for _ in range(7)]
        args = [weed_binary(), "server", f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={p[0]}", f"-master.port.grpc={p[1]}", f"-volume.port={p[2]}",
                f"-volume.port.grpc={p[3]}", f"-filer.port={p[4]}", f"-filer.port.grpc={p[5]}",
                "-s3", f"-s3.port={self.port}", f"-s3.port.grpc={p[6]}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-s3.config={self.config}", "-master.volumeSizeLimitMB=64", "-volume.max=0", "-iam=false",
                "-metricsPort=0"]
        return self.spawn(args, lambda: http_answers(self.port, (b"HTTP/1.1 403", b"HTTP/1.1 200")), timeout,
                          interval=0.3)

    def url(self, bucket, prefix="", endpoint=None):
        u = f"s3:{endpoint or self.endpoint}/{bucket}"
        return u + (f"/{prefix}" if prefix else "")

    def credentials(self, path, role="admin", **settings):
        ak, sk = self.keys[role]
        return write_credentials(path, ak, sk, **settings)

    def client(self, role="admin"):
        """A botocore client of this store (the reference, for checks from outside cairn)."""
        import botocore.session
        from botocore.config import Config
        ak, sk = self.keys[role]
        s = botocore.session.get_session()
        return s.create_client("s3", endpoint_url=self.endpoint, aws_access_key_id=ak, aws_secret_access_key=sk,
                               region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
