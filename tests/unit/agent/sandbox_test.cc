// The drill sandbox on its own (agent/sandbox/sandbox.h): the disk budget's
// arithmetic, the deadline, the sandbox's directory and marker, its tools
// (run, timeout) and its teardown. Nothing here needs a network namespace
// or a cgroup (memory_max "none").
#include "agent/sandbox/sandbox.h"

#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "agent_fixture.h"

using namespace cairn;
using namespace cairn::agent;
using namespace cairn::agent::test;
namespace fs = std::filesystem;

namespace {

DrillDecl sandbox_decl(const TempDir& d) {
  DrillDecl decl;
  decl.root = d.file("drills");
  decl.memory_max = std::nullopt;
  fs::create_directories(decl.root);
  return decl;
}

}  // namespace

TEST_CASE("the disk budget refuses a drill needing more than the budget or the free space, and takes one that fits") {
  TempDir d;
  DrillDecl decl = sandbox_decl(d);
  const uint64_t MiB = 1ull << 20;
  decl.disk_budget = 100 * MiB;
  // Over the budget: refused whatever the free space, naming the budget.
  std::string why = disk_refusal(decl, 200 * MiB, 1000 * MiB);
  CHECK(why.find("over the [drill] disk_budget") != std::string::npos);
  CHECK(why.find("nothing was restored (raise disk_budget)") != std::string::npos);
  // Exactly the budget fits.
  CHECK(disk_refusal(decl, 100 * MiB, 1000 * MiB).empty());
  // Within the budget but over the free space: refused naming the root.
  why = disk_refusal(decl, 50 * MiB, 10 * MiB);
  CHECK(why.find("under '" + decl.root + "'") != std::string::npos);
  CHECK(why.find("free; nothing was restored") != std::string::npos);
  // No budget: only the free space bounds it.
  decl.disk_budget = 0;
  CHECK(disk_refusal(decl, 5000 * MiB, 5000 * MiB).empty());
  CHECK_FALSE(disk_refusal(decl, 5000 * MiB + 1, 5000 * MiB).empty());
  CHECK(drill_root_free_bytes(decl) > 0);
}

TEST_CASE("a drill's deadline stops it once passed, and a cancel stops it without passing the deadline") {
  {
    Deadline dl(std::chrono::milliseconds(200), nullptr);
    CHECK_FALSE(dl.stopped());
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!dl.stopped() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK(dl.stopped());
    CHECK(dl.passed());
    CHECK(dl.stop().load());
  }
  {
    std::atomic<bool> cancel{false};
    Deadline dl(std::chrono::seconds(60), &cancel);
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    CHECK_FALSE(dl.stopped());
    cancel = true;
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!dl.stopped() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK(dl.stopped());
    CHECK_FALSE(dl.passed());
  }
}

TEST_CASE("a sandbox is a marked 0700 directory of the root, runs its tools with a timeout, and its teardown removes it") {
  TempDir d;
  DrillDecl decl = sandbox_decl(d);
  const std::string dir = decl.root + "/drill-tk-sb1";
  {
    Sandbox box(decl, "tk-sb1");
    REQUIRE(box.dir() == dir);
    struct stat st {};
    REQUIRE(::stat(dir.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0700);
    std::ifstream marker(dir + "/.cairn-drill-sandbox");
    std::string text((std::istreambuf_iterator<char>(marker)), std::istreambuf_iterator<char>());
    CHECK(text == "cairn drill sandbox tk-sb1\n");
    CHECK(box.bound().empty());  // memory_max "none": nothing to bound

    auto ok = box.run({"sh", "-c", "echo hello; pwd"}, std::chrono::seconds(10), nullptr);
    CHECK(ok.ok);
    CHECK(ok.out == "hello\n" + dir + "\n");  // run in the sandbox
    auto bad = box.run({"sh", "-c", "echo why >&2; exit 3"}, std::chrono::seconds(10), nullptr);
    CHECK_FALSE(bad.ok);
    CHECK(bad.why == "exited with status 3: why");
    auto slow = box.run({"sleep", "30"}, std::chrono::milliseconds(300), nullptr);
    CHECK_FALSE(slow.ok);
    CHECK(slow.why.find("(timeout)") != std::string::npos);
    std::atomic<bool> cancel{true};
    auto cancelled = box.run({"sleep", "30"}, std::chrono::seconds(30), &cancel);
    CHECK(cancelled.why == "cancelled");

    // A server left running is killed by the teardown.
    pid_t server = box.spawn({"sleep", "60"}, dir + "/server.log");
    int status = 0;
    CHECK(box.running(server, &status));
    box.teardown();
    CHECK_FALSE(fs::exists(dir));
    CHECK(::kill(server, 0) != 0);
  }
  // The same task again replaces its own sandbox; a directory of that name
  // that no drill made is left alone.
  {
    Sandbox again(decl, "tk-sb2");
    std::ofstream(again.dir() + "/left") << "x";
  }
  CHECK_FALSE(fs::exists(decl.root + "/drill-tk-sb2"));
  fs::create_directories(decl.root + "/drill-tk-sb3");
  ::chmod((decl.root + "/drill-tk-sb3").c_str(), 0700);
  CHECK_THROWS(Sandbox(decl, "tk-sb3"));
  CHECK(fs::exists(decl.root + "/drill-tk-sb3"));
}
