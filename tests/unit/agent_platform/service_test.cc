// Service control: declared commands, and systemd units over D-Bus against
// Debian's real systemd (a private user manager, see SystemdManager below).
#include "agent/platform/service.h"

#include <catch2/catch.hpp>
#include <filesystem>

#include "agent/platform/process.h"
#include "common/util/error.h"
#include "platform_fixture.h"

using namespace cairn;
using namespace cairn::agent::platform;
using namespace cairn::agent::platform::test;
using namespace std::chrono_literals;

namespace {

std::vector<std::string> log_to(const std::string& file, const std::string& word) {
  return {"sh", "-c", "echo " + word + " >> '" + file + "'"};
}

}  // namespace

TEST_CASE("service: declared start, stop and reload commands run") {
  TempDir d;
  std::string log = d.file("log");
  ServiceDecl decl;
  decl.start_command = log_to(log, "start");
  decl.stop_command = log_to(log, "stop");
  Service svc(decl);
  svc.stop();
  svc.start();
  svc.reload();  // no reload declared: stop, then start
  CHECK(read_text(log) == "stop\nstart\nstop\nstart\n");

  decl.reload_command = log_to(log, "reload");
  Service(decl).reload();
  CHECK(read_text(log) == "stop\nstart\nstop\nstart\nreload\n");
  CHECK(decl.describe() == "command 'sh -c echo start >> '" + log + "'', command 'sh -c echo stop >> '" + log + "''");
}

TEST_CASE("service: a failing command is an error with its status and last stderr line") {
  ServiceDecl decl;
  decl.stop_command = {"sh", "-c", "echo 'no such pid file' >&2; exit 3"};
  try {
    Service(decl).stop();
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::io);
    CHECK_THAT(e.what(), Catch::Contains("stop command 'sh -c") && Catch::Contains("exited with status 3: no such pid file"));
  }
}

TEST_CASE("service: a command past the timeout is killed and reported") {
  ServiceDecl decl;
  decl.start_command = {"sleep", "30"};
  decl.timeout = 300ms;
  auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(Service(decl).start(), Catch::Contains("start command 'sleep 30'") && Catch::Contains("timeout"));
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
}

TEST_CASE("service: cancel stops the wait for a command") {
  std::atomic<bool> cancel{true};
  ServiceDecl decl;
  decl.start_command = {"sleep", "30"};
  try {
    Service(decl).start(&cancel);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::interrupted);
  }
}

TEST_CASE("service: nothing declared for an action is an error saying what to declare") {
  ServiceDecl decl;
  decl.start_command = {"true"};
  CHECK_THROWS_WITH(Service(decl).stop(), Catch::Contains("stop_command"));
  CHECK(ServiceDecl{}.empty());
}

TEST_CASE("service: a systemd unit without a system bus is a clear error") {
  // Where a system bus exists (a developer's host), this would talk to the real
  // systemd: the test only runs where there is none, as in CI containers.
  if (std::filesystem::exists("/run/dbus/system_bus_socket") || getenv("DBUS_SYSTEM_BUS_ADDRESS")) {
    WARN("a system bus exists here: not asking systemd to start a unit from a test");
    return;
  }
  ServiceDecl decl;
  decl.unit = "cairn-test-nonexistent.service";
  CHECK(decl.describe() == "systemd unit 'cairn-test-nonexistent.service'");
  CHECK_THROWS_WITH(Service(decl).start(), Catch::Contains("systemd unit 'cairn-test-nonexistent.service'") &&
                                               Catch::Contains("system bus") && Catch::Contains("start_command"));
  CHECK_THROWS_WITH(Service(decl).stop(), Catch::Contains("system bus"));
}

// ---- systemd over D-Bus, against a real systemd ---------------------------
//
// cairn's test machines do not boot with systemd. These tests run Debian's
// systemd as a private user manager with its own bus
// (tests/integration/servers_systemd.py) and point DBUS_SYSTEM_BUS_ADDRESS,
// which sd-bus reads, at it: Service talks to it exactly as to PID 1.

namespace {

const std::string kHelper = std::string(CAIRN_PLATFORM_TEST_DIR) + "/../../integration/servers_systemd.py";

class SystemdManager {
 public:
  SystemdManager() {
    ProcessSpec spec;
    spec.argv = {"python3", kHelper, "start", dir_.path()};
    spec.timeout = std::chrono::seconds(60);
    ProcessResult r = run_process(spec);
    if (!r.ok()) throw std::runtime_error("cannot start systemd for the test: " + r.describe() + "\n" + r.err);
    bus_ = r.out.substr(0, r.out.find('\n'));
    ::setenv("DBUS_SYSTEM_BUS_ADDRESS", bus_.c_str(), 1);
  }
  ~SystemdManager() {
    ::unsetenv("DBUS_SYSTEM_BUS_ADDRESS");
    ProcessSpec spec;
    spec.argv = {"python3", kHelper, "stop", dir_.path()};
    spec.timeout = std::chrono::seconds(60);
    run_process(spec);
  }
  // Writes a unit file and makes the manager read it.
  void unit(const std::string& name, const std::string& text) {
    write_text(dir_.path() + "/units/" + name, text);
    reload();
  }
  void mask(const std::string& name) {
    std::filesystem::create_symlink("/dev/null", dir_.path() + "/units/" + name);
    reload();
  }
  std::string file(const std::string& name) const { return dir_.file(name); }

 private:
  void reload() {
    ProcessSpec spec;
    spec.argv = {
        "busctl", "--address=" + bus_, "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
        "Reload"};
    spec.timeout = std::chrono::seconds(30);
    ProcessResult r = run_process(spec);
    if (!r.ok()) throw std::runtime_error("systemd's Reload failed: " + r.err);
  }
  TempDir dir_;
  std::string bus_;  // "unix:path=...", printed by the helper
};

// The pid the unit's shell wrote (a simple unit is active once forked: the
// file may come a moment later); the file is removed for the next start.
pid_t pid_in(const std::string& file) {
  pid_t pid = static_cast<pid_t>(std::stol(wait_for_file(file)));
  std::filesystem::remove(file);
  return pid;
}

}  // namespace

TEST_CASE("service: a systemd unit is stopped, started and reloaded over D-Bus") {
  SystemdManager sd;
  std::string pidf = sd.file("pid"), log = sd.file("log");
  sd.unit("cairn-test.service", "[Service]\nExecStart=/bin/sh -c 'echo $$$$ > " + pidf +
                                    "; exec sleep 1000'\n"
                                    "ExecReload=/bin/sh -c 'echo reload >> " +
                                    log + "'\n");
  ServiceDecl decl;
  decl.unit = "cairn-test.service";
  Service svc(decl);
  CHECK(svc.problem(ServiceUse::stop_start) == "");
  CHECK(svc.problem(ServiceUse::reload) == "");

  svc.start();  // returns once systemd's job is done and the unit is active
  pid_t first = pid_in(pidf);
  REQUIRE(first > 0);
  CHECK(alive(first));

  svc.reload();
  CHECK(read_text(log) == "reload\n");
  CHECK(alive(first));  // a reload is not a restart

  svc.stop();
  CHECK(gone_within(first, 5s));
  svc.stop();  // stopping a stopped unit is no error

  svc.start();
  pid_t second = pid_in(pidf);
  CHECK(second != first);
  CHECK(alive(second));
  svc.stop();
  CHECK(gone_within(second, 5s));
}

TEST_CASE("service: a systemd unit that fails to start is an error naming the unit and the job's result") {
  SystemdManager sd;
  sd.unit("cairn-broken.service", "[Service]\nType=oneshot\nExecStart=/bin/false\n");
  ServiceDecl decl;
  decl.unit = "cairn-broken.service";
  try {
    Service(decl).start();
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::io);
    CHECK_THAT(e.what(), Catch::Contains("systemd unit 'cairn-broken.service'") && Catch::Contains("start job ended 'failed'") &&
                             Catch::Contains("journalctl -u cairn-broken.service"));
  }
}

TEST_CASE("service: a systemd job past the timeout is reported, not waited for forever") {
  SystemdManager sd;
  sd.unit("cairn-slow.service", "[Service]\nType=oneshot\nExecStart=/bin/sleep 30\n");
  ServiceDecl decl;
  decl.unit = "cairn-slow.service";
  decl.timeout = 1s;
  auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(Service(decl).start(),
                    Catch::Contains("did not finish the start job within 1 s") && Catch::Contains("systemctl status cairn-slow.service"));
  CHECK(std::chrono::steady_clock::now() - t0 < 10s);
}

TEST_CASE("service: preflight names a unit systemd does not know, a masked one, and one that cannot reload") {
  SystemdManager sd;
  sd.unit("cairn-noreload.service", "[Service]\nExecStart=/bin/sleep 1000\n");
  sd.mask("cairn-masked.service");
  ServiceDecl decl;
  decl.unit = "cairn-nonexistent.service";
  CHECK_THAT(Service(decl).problem(ServiceUse::stop_start),
             Catch::Contains("'cairn-nonexistent.service' does not exist") && Catch::Contains("'service' setting"));
  decl.unit = "cairn-masked.service";
  CHECK_THAT(Service(decl).problem(ServiceUse::stop_start),
             Catch::Contains("is masked") && Catch::Contains("systemctl unmask cairn-masked.service"));
  decl.unit = "cairn-noreload.service";
  CHECK(Service(decl).problem(ServiceUse::stop_start) == "");
  CHECK_THAT(Service(decl).problem(ServiceUse::reload), Catch::Contains("cannot be reloaded") && Catch::Contains("reload_command"));
  // A declared reload_command replaces the unit's ExecReload, and stop and
  // start still go through the unit.
  decl.reload_command = {"true"};
  CHECK(Service(decl).problem(ServiceUse::reload) == "");
  CHECK(Service(decl).problem(ServiceUse::stop_start) == "");
  // A stop_command beside a unit: the start still needs the unit.
  decl.reload_command.clear();
  decl.unit = "cairn-nonexistent.service";
  decl.stop_command = {"true"};
  CHECK_THAT(Service(decl).problem(ServiceUse::stop_start), Catch::Contains("does not exist"));
}

TEST_CASE("service: preflight names a missing command and a half-declared pair") {
  ServiceDecl decl;
  CHECK_THAT(Service(decl).problem(ServiceUse::stop_start), Catch::Contains("no 'service' declared"));
  decl.start_command = {"/nonexistent/start-it"};
  CHECK_THAT(Service(decl).problem(ServiceUse::stop_start), Catch::Contains("no stop_command and no systemd unit"));
  decl.stop_command = {"true"};
  CHECK_THAT(Service(decl).problem(ServiceUse::stop_start),
             Catch::Contains("start_command '/nonexistent/start-it' is not found or not executable"));
  decl.start_command = {"sh", "-c", "true"};
  CHECK(Service(decl).problem(ServiceUse::stop_start) == "");
  CHECK(Service(decl).problem(ServiceUse::reload) == "");  // a reload is then a stop and a start
}

TEST_CASE("service: a stop command not done after kill_after is escalated to the kill_command, and says so") {
  TempDir d;
  std::string log = d.file("log");
  ServiceDecl decl;
  decl.start_command = {"true"};
  decl.stop_command = {"sleep", "30"};  // a clean shutdown that hangs (no quorum left)
  decl.kill_command = log_to(log, "kill");
  decl.kill_after = 500ms;
  auto t0 = std::chrono::steady_clock::now();
  StopOutcome out = Service(decl).stop();
  CHECK(std::chrono::steady_clock::now() - t0 < 10s);
  CHECK(out.killed);
  CHECK_THAT(out.detail, Catch::Contains("'sleep 30' had not finished") && Catch::Contains("killed with 'sh -c echo kill"));
  CHECK(read_text(log) == "kill\n");

  // A stop that ends in time is not escalated.
  decl.stop_command = log_to(log, "stop");
  out = Service(decl).stop();
  CHECK_FALSE(out.killed);
  CHECK(read_text(log) == "kill\nstop\n");

  // Without escalation the hanging stop fails at its timeout, as before.
  decl.stop_command = {"sleep", "30"};
  decl.kill_after = 0ms;
  decl.timeout = 300ms;
  CHECK_THROWS_WITH(Service(decl).stop(), Catch::Contains("timeout"));
  CHECK(read_text(log) == "kill\nstop\n");

  // kill() with nothing declared to kill with says what to declare.
  ServiceDecl bare;
  bare.stop_command = {"true"};
  CHECK_FALSE(Service(bare).can_kill());
  CHECK_THROWS_WITH(Service(bare).kill(), Catch::Contains("kill_command"));
}

namespace {

// A unit that ignores SIGTERM, with systemd's own escalation (TimeoutStopSec)
// far away, started; its decl has kill_after = 1 s. Returns its main PID.
pid_t start_stubborn(SystemdManager& sd, const std::string& unit, ServiceDecl& decl) {
  std::string pidf = sd.file("pid-" + unit);
  sd.unit(unit,
          "[Service]\nExecStart=/bin/sh -c 'echo $$$$ > " + pidf + "; trap \"\" TERM; while :; do sleep 1; done'\nTimeoutStopSec=600\n");
  decl.unit = unit;
  decl.kill_after = 1s;
  Service(decl).start();
  return pid_in(pidf);
}

}  // namespace

TEST_CASE("service: a systemd unit that ignores SIGTERM is killed through KillUnit after kill_after") {
  SystemdManager sd;
  ServiceDecl decl;
  pid_t pid = start_stubborn(sd, "cairn-stubborn.service", decl);
  REQUIRE(alive(pid));
  auto t0 = std::chrono::steady_clock::now();
  StopOutcome out = Service(decl).stop();
  CHECK(std::chrono::steady_clock::now() - t0 < 30s);
  CHECK(out.killed);
  CHECK_THAT(out.detail, Catch::Contains("had not stopped after 1 s") && Catch::Contains("KillUnit"));
  CHECK(gone_within(pid, 5s));
}

TEST_CASE("service: a unit whose stop outlives kill_after is killed with the declared kill_command") {
  SystemdManager sd;
  ServiceDecl decl;
  pid_t pid = start_stubborn(sd, "cairn-stubborn2.service", decl);
  REQUIRE(alive(pid));
  decl.kill_command = {"/bin/kill", "-KILL", std::to_string(pid)};
  StopOutcome out = Service(decl).stop();
  CHECK(out.killed);
  CHECK_THAT(out.detail, Catch::Contains("had not stopped after 1 s") && Catch::Contains("/bin/kill -KILL"));
  CHECK(gone_within(pid, 5s));
  Service(decl).stop();  // down already: no error, nothing to kill
}
