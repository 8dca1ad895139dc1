"""The controller's own libzmq (cmake/controller_libzmq.cmake, issue 13):
Debian's libzmq source built with 32-frame pipe chunks instead of 256, so a
long-lived agent connection holds ~35 KB in libzmq instead of ~97 KB. What an
operator would notice: the controller says which libzmq it loaded, it is the
controller's own, and a CURVE+ZAP connection that has carried a few hundred
messages each way holds far less on it than on Debian's libzmq5. Every other
controller test runs its fleet and operator sockets on that libzmq too."""
import json
import os
import pathlib
import re
import subprocess

import pytest

from cluster import BUILD

CONTROLLER = BUILD / "controller" / "cairn-controller"
OWN = BUILD / "lib" / "cairn" / "libzmq.so.5"  # bin/../lib/cairn, as installed
FLOOR = BUILD / "bench" / "fleet" / "cairn-bench-zmq-floor"
DEBIAN_DIR = pathlib.Path("/usr/lib/x86_64-linux-gnu")


def version_line(env=None):
    p = subprocess.run([os.fspath(CONTROLLER), "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30, env=env)
    assert p.returncode == 0, p.stdout
    return p.stdout.decode()


def test_the_controller_loads_its_own_libzmq_and_says_so():
    assert OWN.is_file(), (f"{OWN} was not built: bash scripts/fetch-libzmq-source.sh fetches Debian's libzmq "
                           "source, then the build makes the controller's libzmq from it")
    out = version_line()
    m = re.search(r"libzmq (\d+\.\d+\.\d+) from (\S+) \(the controller's own: Debian's (\S+) (\S+) source, "
                  r"32-frame pipe chunks", out)
    assert m, out
    assert pathlib.Path(m.group(2)) == OWN.resolve(), out
    deb_version = subprocess.run(["dpkg-query", "-W", "-f=${source:Version}", "libzmq5"],
                                 stdout=subprocess.PIPE, check=True).stdout.decode()
    assert m.group(4) == deb_version, f"built from {m.group(4)}, installed libzmq5 is {deb_version}"


def test_a_controller_on_another_libzmq_warns_with_what_it_costs():
    # LD_LIBRARY_PATH wins over the controller's RUNPATH: what an operator who
    # lost /usr/lib/cairn/libzmq.so.5 (or overrode it) would get.
    out = version_line(env=dict(os.environ, LD_LIBRARY_PATH=os.fspath(DEBIAN_DIR)))
    assert "instead of the controller's own" in out and "~97 KB instead of ~35 KB" in out, out
    assert os.fspath(DEBIAN_DIR) in out, out


def floor(env=None):
    p = subprocess.run([os.fspath(FLOOR), "--connections", "200", "--rounds", "400", "--zap", "--frames", "2",
                        "--bytes", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300, env=env)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    return json.loads(p.stdout.decode().strip().splitlines()[-1])


def test_a_long_lived_curve_connection_holds_far_less_on_the_controllers_libzmq():
    if b"__asan_init" in FLOOR.read_bytes():
        # AddressSanitizer's redzones and shadow around every allocation
        # measure the sanitizer, not libzmq's chunks (the normal build runs this).
        pytest.skip("resident memory per connection is not libzmq's under AddressSanitizer")
    debian = floor(env=dict(os.environ, LD_LIBRARY_PATH=os.fspath(DEBIAN_DIR)))
    own = floor(env=dict(os.environ, LD_LIBRARY_PATH=os.fspath(OWN.parent)))
    assert pathlib.Path(own["libzmq_path"]).resolve() == OWN.resolve(), own
    assert pathlib.Path(debian["libzmq_path"]).parent == DEBIAN_DIR, debian
    # Measured: ~97 KB on Debian's, ~35 KB on the controller's (docs/benchmarks.md).
    assert debian["kb_per_connection_long_lived"] > 70, debian
    assert own["kb_per_connection_long_lived"] < 0.6 * debian["kb_per_connection_long_lived"], (own, debian)
