"""What the JVM test servers (servers_kafka.py, servers_opensearch.py) share:
the class-data archive that makes a JVM start with less CPU, and stopping a
server by the PID in its directory's server.pid."""
import glob
import hashlib
import os
import shutil
import signal
import sys
import tempfile
import time


def jdk_id():
    """What an archive is valid for: this java and its libjvm (a JDK upgrade changes it)."""
    java = os.path.realpath(shutil.which("java") or "java")
    home = os.path.dirname(os.path.dirname(java))
    try:
        st = os.stat(os.path.join(home, "lib", "server", "libjvm.so"))
        mark = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        mark = "?"
    return hashlib.sha256(f"{java}|{mark}".encode()).hexdigest()[:16]


def archive_in(lib_dir):
    """The class-data archive of lib_dir's classes for this JDK."""
    return os.path.join(lib_dir, f"classes-{jdk_id()}.jsa")


def flags_with_archive(flags, archive):
    """flags, plus what makes the JVM use archive when it exists."""
    if os.path.exists(archive):
        return list(flags) + [f"-XX:SharedArchiveFile={archive}", "-Xshare:auto", "-Xlog:cds*=off", "-Xlog:class+path*=off"]
    return list(flags)


def keep_archive(tmp, archive, log):
    """Puts the archive a JVM wrote at exit (tmp) in place and removes other JDKs' ones beside it."""
    if not os.path.exists(tmp):
        raise SystemExit(f"the JVM wrote no class-data archive (log: {log})")
    os.rename(tmp, archive)
    for old in glob.glob(os.path.join(os.path.dirname(archive), "classes-*.jsa")):
        if old != archive:
            os.unlink(old)  # another JDK's
    return archive


def archive_command(argv, archive_of, make, prefix):
    """`<server>.py cds VERSION`: makes the version's archive unless it exists; exits."""
    if os.path.exists(archive_of(argv[2])):
        sys.exit(0)
    with tempfile.TemporaryDirectory(prefix=prefix) as work:
        print(f"made {make(argv[2], work)}")
    sys.exit(0)


def stop_pid(running_pid, d, kill=False, timeout=60):
    """Stops the server whose PID running_pid(d) gives (SIGTERM, SIGKILL after timeout), by that PID."""
    pid = running_pid(d)
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + timeout
    while running_pid(d) is not None:
        if time.time() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            deadline = time.time() + 30
        time.sleep(0.2)
