"""One server process of a test, in its own process group: started with its
output in a log file, waited for until it answers, and killed by its PID's
group when the test ends (its data dies with the test's tmp dir, so there is
no tidy shutdown to wait for). Used by servers_s3.py and servers_azurite.py."""
import os
import signal
import socket
import subprocess
import time


class ServerProc:
    name = "the server"

    def __init__(self, log):
        self.log = log
        self.proc = None

    def spawn(self, args, answers, timeout, env=None, interval=0.2):
        """Starts `args`; returns once answers() is true, fails if it exits or does not answer in time."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if answers():
                return self
            time.sleep(interval)
        raise AssertionError(f"{self.name} did not answer in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self):
        """SIGKILL to its process group (by the PID this object started)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


def http_answers(port, prefixes=(b"HTTP/1.1",)):
    """Whether a plain GET / on 127.0.0.1:port gets a status line starting with one of `prefixes`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = s.recv(64)
            return any(head.startswith(p) for p in prefixes)
    except OSError:
        return False
