// The child-process runner: output, exit status and signal, timeouts that
// reach the whole process group, cancel, input, environment.
#include "agent/platform/process.h"

#include <catch2/catch.hpp>
#include <thread>

#include "common/util/error.h"
#include "platform_fixture.h"

using namespace cairn;
using namespace cairn::agent::platform;
using namespace cairn::agent::platform::test;
using namespace std::chrono_literals;

namespace {

ProcessResult sh(const std::string& script, std::chrono::milliseconds timeout = 10s) {
  ProcessSpec s;
  s.argv = {"sh", "-c", script};
  s.timeout = timeout;
  return run_process(s);
}

}  // namespace

TEST_CASE("process: stdout and stderr are captured, the exit status is described") {
  auto r = sh("echo out; echo first >&2; echo 'the last line' >&2; exit 3");
  CHECK(r.exit_code == 3);
  CHECK(r.signal == 0);
  CHECK_FALSE(r.ok());
  CHECK(r.out == "out\n");
  CHECK(r.err == "first\nthe last line\n");
  CHECK(r.describe() == "exited with status 3: the last line");

  auto ok = sh("echo fine");
  CHECK(ok.ok());
  CHECK(ok.describe() == "exited with status 0");
}

TEST_CASE("process: a signal that ended it is named") {
  auto r = sh("kill -USR1 $$");
  CHECK(r.exit_code == -1);
  CHECK(r.signal == SIGUSR1);
  CHECK_FALSE(r.ok());
  CHECK(r.describe() == "killed by signal 10 (SIGUSR1)");
}

TEST_CASE("process: the timeout kills the whole group, a grandchild included") {
  // The shell starts a sleeping grandchild, prints its pid, and waits.
  auto t0 = std::chrono::steady_clock::now();
  auto r = sh("sleep 30 & echo $!; wait", 300ms);
  auto took = std::chrono::steady_clock::now() - t0;
  CHECK(r.timed_out);
  CHECK_FALSE(r.ok());
  CHECK(r.describe().rfind("killed after 300 ms (timeout)", 0) == 0);
  CHECK(took < 5s);
  pid_t grandchild = std::stoi(r.out);
  CHECK(gone_within(grandchild, 2s));
}

TEST_CASE("process: a group that ignores SIGTERM is killed after the grace period") {
  ProcessSpec s;
  s.argv = {"sh", "-c", "trap '' TERM; sleep 30 & echo $!; wait"};
  s.timeout = 200ms;
  s.kill_grace = 300ms;
  auto t0 = std::chrono::steady_clock::now();
  auto r = run_process(s);
  auto took = std::chrono::steady_clock::now() - t0;
  CHECK(r.timed_out);
  CHECK(r.signal == SIGKILL);
  CHECK(took >= 450ms);
  CHECK(took < 5s);
  CHECK(gone_within(std::stoi(r.out), 2s));
}

TEST_CASE("process: cancel kills the group and says so") {
  std::atomic<bool> cancel{false};
  ProcessSpec s;
  s.argv = {"sh", "-c", "sleep 30 & echo $!; wait"};
  s.cancel = &cancel;
  std::thread t([&] {
    std::this_thread::sleep_for(200ms);
    cancel = true;
  });
  auto t0 = std::chrono::steady_clock::now();
  auto r = run_process(s);
  t.join();
  CHECK(r.cancelled);
  CHECK_FALSE(r.timed_out);
  CHECK_FALSE(r.ok());
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  CHECK(r.describe().find("cancelled") != std::string::npos);
  CHECK(gone_within(std::stoi(r.out), 2s));
}

TEST_CASE("process: a background process left running by a start command survives, the call returns") {
  // What a declared start command does: launch the service and exit. With its
  // output redirected the call returns at once; holding stdout, within ~1 s.
  auto t0 = std::chrono::steady_clock::now();
  auto r = sh("sleep 30 >/dev/null 2>&1 & echo $!");
  CHECK(r.ok());
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);
  pid_t bg = std::stoi(r.out);
  CHECK(alive(bg));
  ::kill(bg, SIGKILL);

  t0 = std::chrono::steady_clock::now();
  auto r2 = sh("sleep 30 & echo $!");
  CHECK(r2.ok());
  CHECK(std::chrono::steady_clock::now() - t0 < 3s);
  pid_t bg2 = std::stoi(r2.out);
  CHECK(alive(bg2));
  ::kill(bg2, SIGKILL);
}

TEST_CASE("process: stdin data reaches the child, larger than a pipe's buffer") {
  std::string input(1 << 20, 'x');
  for (size_t i = 0; i < input.size(); i += 97) input[i] = static_cast<char>('a' + i % 26);
  ProcessSpec s;
  s.argv = {"cat"};
  s.stdin_data = input;
  s.max_output = 2 << 20;
  auto r = run_process(s);
  CHECK(r.ok());
  CHECK(r.out == input);
}

TEST_CASE("process: a child that does not read its input does not hurt the caller") {
  ProcessSpec s;
  s.argv = {"true"};
  s.stdin_data = std::string(4 << 20, 'y');
  auto r = run_process(s);
  CHECK(r.ok());
}

TEST_CASE("process: output over max_output is dropped and marked") {
  ProcessSpec s;
  s.argv = {"head", "-c", "100000", "/dev/zero"};
  s.max_output = 1000;
  auto r = run_process(s);
  CHECK(r.ok());
  CHECK(r.out.size() == 1000);
  CHECK(r.truncated);
}

TEST_CASE("process: environment and working directory") {
  TempDir d;
  ProcessSpec s;
  s.argv = {"sh", "-c", "echo \"$CAIRN_TEST_VAR\"; pwd"};
  s.env = {"CAIRN_TEST_VAR=hello there"};
  s.cwd = d.path();
  auto r = run_process(s);
  CHECK(r.ok());
  CHECK(r.out == "hello there\n" + std::filesystem::canonical(d.path()).string() + "\n");
}

TEST_CASE("process: a program that cannot start is an error naming it") {
  ProcessSpec s;
  s.argv = {"cairn-no-such-program"};
  try {
    run_process(s);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::not_found);
    CHECK(std::string(e.what()).find("'cairn-no-such-program'") != std::string::npos);
    CHECK(std::string(e.what()).find("PATH") != std::string::npos);
  }
  TempDir d;
  write_text(d.file("script"), "#!/bin/sh\necho hi\n");  // not executable
  s.argv = {d.file("script")};
  CHECK_THROWS_WITH(run_process(s), Catch::Contains("Permission denied") && Catch::Contains(d.file("script")));
  s.argv = {};
  CHECK_THROWS_AS(run_process(s), Error);
}
