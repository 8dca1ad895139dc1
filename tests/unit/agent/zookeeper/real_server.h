#pragma once
// A real standalone ZooKeeper for unit tests (Debian's zookeeper package):
// started in a directory of the test's on a free port, written to with
// zkCli, stopped by its PID. Shared by the file logic's tests and the drill's.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/drivers/zookeeper/four_letter.h"
#include "tests/unit/agent/agent_fixture.h"

extern char** environ;

namespace cairn::agent::test::zk {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using cairn::agent::zookeeper::parse_srvr;
using cairn::agent::zookeeper::ServerStatus;

inline const char* kJar = "/usr/share/java/zookeeper.jar";
inline const char* kCli = "/usr/share/zookeeper/bin/zkCli.sh";

inline bool have_zookeeper() { return fs::exists(kJar) && fs::exists(kCli) && std::system("command -v java >/dev/null 2>&1") == 0; }

using cairn::agent::test::free_port;

// One four-letter word over TCP, "" when nothing answers. Every read and
// write is bounded (5 s): whatever holds the port, the test never blocks on it.
inline std::string ask(int port, const std::string& word) {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{5, 0};
  ::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    (void)!::write(s, word.data(), word.size());
    char buf[4096];
    ssize_t r;
    while ((r = ::read(s, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(r));
  }
  ::close(s);
  return out;
}

// A standalone server in dir, stopped (by its pid) when the object goes.
struct Server {
  pid_t pid = -1;
  int port = 0;
  std::string dir, data;
  Server(const std::string& d, const std::string& data_dir, int snap_count = 20) : dir(d), data(data_dir) {
    port = free_port();
    fs::create_directories(data);
    std::ofstream(dir + "/zoo.cfg") << "tickTime=2000\ndataDir=" << data << "\nclientPort=" << port
                                    << "\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n"
                                       "4lw.commands.whitelist=srvr,mntr,ruok,stat\nsnapCount="
                                    << snap_count << "\n";
    std::string cfg = dir + "/zoo.cfg", log = dir + "/server.log";
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    std::vector<std::string> args = {"java", "-Xmx256m", "-cp", kJar, "org.apache.zookeeper.server.quorum.QuorumPeerMain", cfg};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    REQUIRE(posix_spawnp(&pid, "java", &fa, nullptr, argv.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    auto deadline = std::chrono::steady_clock::now() + 60s;
    // ruok answers while the data is still loading; srvr only once it serves.
    while (ask(port, "srvr").find("Zookeeper version") == std::string::npos) {
      int st = 0;
      if (::waitpid(pid, &st, WNOHANG) == pid) {
        pid = -1;
        FAIL("ZooKeeper exited before serving on port " << port << "; see " << log);
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        stop();  // a throwing constructor runs no destructor
        FAIL("ZooKeeper did not serve within 60 s; see " << log);
      }
      std::this_thread::sleep_for(200ms);
    }
  }
  ServerStatus status() { return parse_srvr(ask(port, "srvr")); }
  // SIGTERM, then SIGKILL after 20 s: a JVM stuck in a shutdown hook does
  // not hold the test.
  void stop() {
    if (pid <= 0) return;
    ::kill(pid, SIGTERM);
    int st = 0;
    for (int i = 0; i < 200 && ::waitpid(pid, &st, WNOHANG) == 0; ++i) std::this_thread::sleep_for(100ms);
    if (::waitpid(pid, &st, WNOHANG) == 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &st, 0);
    }
    pid = -1;
  }
  ~Server() { stop(); }
};

inline void cli(int port, const std::string& script, const std::string& dir) {
  std::ofstream(dir + "/cli.txt") << script << "quit\n";
  // zkCli retries a connection it cannot make for ever: bounded by timeout(1).
  std::string cmd = "timeout -k 5 120 " + std::string(kCli) + " -server 127.0.0.1:" + std::to_string(port) + " < " + dir + "/cli.txt > " +
                    dir + "/cli.log 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
}

}  // namespace cairn::agent::test::zk
