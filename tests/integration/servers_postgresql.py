"""A real PostgreSQL 15 (Debian's postgresql-15) for the postgresql driver's tests.

PostgreSQL refuses to run as root: the server runs as the `postgres` user the
package made, in a directory of its own under /var/tmp (the test's tmp dir is
root's, 0700, which that user cannot enter), listening on a unix socket only.
Local connections need a password (scram-sha-256), which the agent reads from
a 0600 file. WAL is archived through the agent: archive_command runs a copy of
the tested cairn-agent (readable by the server's user) with `wal-push`.

start.sh and stop.sh (pg_ctl as `postgres`, by the data directory's
postmaster.pid, never by name) are the component's service commands.
"""
import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile
import time

import pytest

from ports import free_port

BIN = pathlib.Path("/usr/lib/postgresql/15/bin")
PASSWORD = "pg-test-secret-4711"


def _run_as_postgres(args, **kw):
    return subprocess.run(["runuser", "-u", "postgres", "--"] + [os.fspath(a) for a in args],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=kw.pop("timeout", 300), **kw)


class Postgres:
    def __init__(self, agent_binary, component="pg"):
        if not (BIN / "postgres").exists():
            pytest.fail(f"'{BIN}/postgres' not found: install Debian's postgresql-15 (bash scripts/install-deps.sh)")
        self._layout(agent_binary, component, "cairn-pg-")
        pwfile = self.base / "initdb.pw"
        pwfile.write_text(PASSWORD + "\n")
        os.chown(pwfile, self.pw.pw_uid, self.pw.pw_gid)
        r = _run_as_postgres([BIN / "initdb", "-D", self.data, "-U", "postgres", "--pwfile", pwfile,
                              "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "--data-checksums",
                              "-E", "UTF8", "--locale=C"])
        assert r.returncode == 0, r.stdout.decode(errors="replace")
        pwfile.unlink()
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"""
port = {self.port}
listen_addresses = ''
unix_socket_directories = '{self.sock_dir}'
wal_level = replica
archive_mode = on
archive_command = '{self.agent_copy} wal-push --socket {self.archive_socket} --timeout 120 %p'
max_wal_size = 256MB
shared_buffers = 64MB
fsync = on
""")
        self._service_scripts()

    def _layout(self, agent_binary, component, prefix):
        """The server's directory under /var/tmp (its user can enter it), the
        password file, a copy of the agent for archive_command, the socket dir."""
        self.pw = pwd.getpwnam("postgres")
        self.base = pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
        os.chmod(self.base, 0o755)
        self.component = component
        self.port = free_port()
        self.data = self.base / "data"
        self.sock_dir = self.base / "sock"
        self.log = self.base / "postgresql.log"
        self.archive_socket = self.base / "archive.sock"
        self.password_file = self.base / "pg.password"
        self.password_file.write_text(PASSWORD + "\n")
        os.chmod(self.password_file, 0o600)
        # The server's user runs archive_command: a copy of the agent it can read.
        bindir = self.base / "bin"
        bindir.mkdir()
        self.agent_copy = bindir / "cairn-agent"
        shutil.copy(agent_binary, self.agent_copy)
        os.chmod(self.agent_copy, 0o755)
        self.sock_dir.mkdir()
        os.chown(self.sock_dir, self.pw.pw_uid, self.pw.pw_gid)
        os.chown(self.base, self.pw.pw_uid, self.pw.pw_gid)

    def _service_scripts(self):
        """start.sh and stop.sh: pg_ctl as `postgres` on this data directory."""
        self.start_sh = self.base / "start.sh"
        self.stop_sh = self.base / "stop.sh"
        self.start_sh.write_text(f"""#!/bin/sh
exec runuser -u postgres -- {BIN}/pg_ctl -D '{self.data}' -l '{self.log}' -w -t 600 start
""")
        self.stop_sh.write_text(f"""#!/bin/sh
[ -f '{self.data}/postmaster.pid' ] || exit 0
exec runuser -u postgres -- {BIN}/pg_ctl -D '{self.data}' -m fast -w -t 120 stop
""")
        os.chmod(self.start_sh, 0o755)
        os.chmod(self.stop_sh, 0o755)

    def component_toml(self):
        return f"""[[component]]
name = "{self.component}"
driver = "postgresql"
data_dir = "{self.data}"
host = "{self.sock_dir}"
port = {self.port}
user = "postgres"
password_file = "{self.password_file}"
archive_socket = "{self.archive_socket}"
service = {{ start_command = ["{self.start_sh}"], stop_command = ["{self.stop_sh}"], timeout_seconds = 600 }}
"""

    def start(self):
        r = subprocess.run([self.start_sh], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=620)
        assert r.returncode == 0, r.stdout.decode(errors="replace") + self.log_tail()
        return self

    def stop(self):
        subprocess.run([self.stop_sh], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=130)

    def kill(self):
        """SIGKILL to the postmaster of the data directory's pid file."""
        pidf = self.data / "postmaster.pid"
        if pidf.exists():
            pid = int(pidf.read_text().split()[0])
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass

    def env(self):
        e = dict(os.environ)
        e.update(PGHOST=os.fspath(self.sock_dir), PGPORT=str(self.port), PGUSER="postgres", PGPASSWORD=PASSWORD,
                 PGDATABASE="postgres")
        return e

    def sql(self, query, db="postgres", check=True):
        """One statement through psql; its rows as lists of strings."""
        r = subprocess.run([BIN / "psql", "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", query],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env(), timeout=300)
        if check:
            assert r.returncode == 0, f"psql: {query}\n{r.stderr.decode(errors='replace')}\n{self.log_tail()}"
        return [line.split("\t") for line in r.stdout.decode().splitlines() if line]

    def value(self, query, db="postgres"):
        rows = self.sql(query, db)
        return rows[0][0] if rows else None

    def pgbench(self, *args):
        r = subprocess.run([BIN / "pgbench"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env=self.env(), timeout=600)
        assert r.returncode == 0, r.stdout.decode(errors="replace")

    def make_shop_databases(self, rows=5000):
        """A role 'reader' and two databases ('shop', 'Odd Name') with a
        table 'items' of `rows` rows it may read: what a logical backup of
        databases, roles and grants must bring back."""
        self.sql("CREATE ROLE reader LOGIN PASSWORD 'r-secret'")
        for db in ("shop", "Odd Name"):
            self.sql(f'CREATE DATABASE "{db}"')
            self.sql("CREATE TABLE items (id int PRIMARY KEY, name text)", db=db)
            self.sql(f"INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, {rows}) g", db=db)
            self.sql("GRANT SELECT ON items TO reader", db=db)

    def start_standby(self, agent_binary):
        """pgbench data and a table 'marks', then a streaming standby of this
        server, started."""
        self.pgbench("-i", "-s", "1", "-q")
        self.sql("CREATE TABLE marks (id int PRIMARY KEY)")
        sb = Standby(self, agent_binary)
        try:
            sb.start()
        except BaseException:
            sb.cleanup()
            raise
        return sb

    def switch_and_wait_archived(self, timeout=120):
        """Closes the current WAL segment and waits until the server archived it; returns its name."""
        # A record first: a switch right after another (the segment empty) does nothing.
        self.value("SELECT pg_logical_emit_message(false, 'cairn-test', 'switch')::text")
        seg = self.value("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
        self.value("SELECT pg_switch_wal()")
        deadline = time.time() + timeout
        while time.time() < deadline:
            last = self.value("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
            if last and last[:24] >= seg:
                return seg
            time.sleep(0.2)
        raise AssertionError(f"segment {seg} was not archived in {timeout} s; archiver: "
                             f"{self.sql('SELECT * FROM pg_stat_archiver')}\n{self.log_tail()}")

    def log_tail(self, n=40):
        try:
            return "\n--- postgresql.log ---\n" + "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def cleanup(self):
        self.stop()
        self.kill()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def postgres_server(cluster):
    from cluster import AGENT
    pg = Postgres(AGENT)
    pg.start()
    yield pg
    pg.cleanup()


class Standby(Postgres):
    """A streaming standby of `primary` (pg_basebackup -R), archiving the WAL it
    receives itself (archive_mode = always) through the agent's socket of its
    own component."""

    def __init__(self, primary, agent_binary, component="pg-standby"):
        self._layout(agent_binary, component, "cairn-pg-standby-")
        self._seed(primary)
        self._service_scripts()

    def _seed(self, primary):
        r = subprocess.run(["runuser", "-u", "postgres", "--", "env", f"PGPASSWORD={PASSWORD}", BIN / "pg_basebackup",
                            "-h", primary.sock_dir, "-p", str(primary.port), "-U", "postgres", "-D", self.data, "-R",
                            "-X", "stream", "-c", "fast"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        assert r.returncode == 0, r.stdout.decode(errors="replace")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"""
port = {self.port}
unix_socket_directories = '{self.sock_dir}'
archive_mode = always
archive_command = '{self.agent_copy} wal-push --socket {self.archive_socket} --timeout 120 %p'
""")

    def reseed(self, primary):
        """What a restore of the primary says to do with a standby: stop it,
        move its data directory aside, pg_basebackup -R from the restored
        primary, start it."""
        self.stop()
        os.rename(self.data, str(self.data) + ".old")
        self._seed(primary)
        self.start()
