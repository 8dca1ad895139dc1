// Service control through declared commands. The systemd path (sd-bus:
// StartUnit/StopUnit/ReloadUnit and waiting for the job) cannot be exercised
// here: cairn's test containers run no systemd and have no system bus. What is
// tested of it is the clear error when the bus is absent.
#include "agent/platform/service.h"

#include <catch2/catch.hpp>

#include <filesystem>

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
    CHECK_THAT(e.what(), Catch::Contains("stop command 'sh -c") &&
                             Catch::Contains("exited with status 3: no such pid file"));
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
