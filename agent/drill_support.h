#pragma once
// What the drivers' drills share (agent/drivers/<name>/drill.cc): the
// report a drill fills as it goes, a started server's wait and the account of
// one that exited, and a confined root made of the restored tree (the
// HAProxy and PostgreSQL drills). Nothing here knows a driver.
#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "agent/config.h"
#include "agent/driver.h"
#include "agent/sandbox/sandbox.h"

namespace cairn::agent {

// What a drill found, as it goes: its phases' seconds, every check with its
// expected and found values, and the reasons it failed.
struct DrillReport {
  nlohmann::json phases = nlohmann::json::object();
  nlohmann::json checks = nlohmann::json::array();
  std::vector<cairn::v1::Reason> reasons;

  template <typename A, typename B>
  bool check(const std::string& name, const A& expected, const B& found, bool ok) {
    checks.push_back({{"name", name}, {"expected", expected}, {"found", found}, {"ok", ok}});
    if (!ok) {
      std::ostringstream why;
      why << "check '" << name << "' failed: expected " << nlohmann::json(expected).dump() << ", found " << nlohmann::json(found).dump();
      reasons.push_back(make_reason(cairn::v1::ERROR_CODE_VERIFY_FAILED, why.str()));
    }
    return ok;
  }
  void fail(cairn::v1::ErrorCode code, const std::string& detail, const std::string& item = {}) {
    reasons.push_back(make_reason(code, detail, item));
  }
};

namespace drill_internal {

// What a drill's server that exited while starting gets said about it: how
// it ended (its status, or the signal and whether the sandbox's memory limit
// sent it), the end of its log, and where the whole log was kept
// (ROOT/failed-<what>-<sandbox>.log, the newest 8 kept).
std::string drill_exit_account(const DrillDecl& d, const Sandbox& box, int status, const std::string& log, const std::string& what);

// Waits for a server the drill started: probe() returns "" once it answers
// as it should, else what it saw. Records the start phase and the check
// `check` ("found": `ready_word`, or what the last probe saw), and a reason
// with the tail of its log when it exited first. True when it answers.
bool wait_started(const DrillDecl& d, Sandbox& box, pid_t server, const std::string& log, const std::string& what, const std::string& check,
                  const std::string& ready_word, const std::atomic<bool>* cancel, DrillReport& rep, Clock::time_point started,
                  const std::function<std::string()>& probe);

// A path inside the sandbox's root that the drill mounts a host path on (or
// makes a directory of): every component below root must be a directory the
// restore made or none at all (no symlink out of the sandbox), and a mount
// point must not hide restored files. "" when made; else why not.
std::string sandbox_mount_point(const std::string& root, const std::string& abs, bool dir, bool empty_dir_only = true);

std::string parent_of(const std::string& p);

// A Confinement rooted at the restored tree: host paths mounted read-only at
// their own paths inside it (mount points made with sandbox_mount_point's
// checks), the first problem kept. A merged /usr's links (/lib -> usr/lib)
// are made as the host has them.
struct ConfinedRoot {
  std::string restored;
  Confinement conf;
  std::string problem;

  explicit ConfinedRoot(std::string root) : restored(std::move(root)) { conf.root = restored; }

  void bind(const std::string& host, bool dir) {
    if (!problem.empty()) return;
    struct stat st {};
    if (::lstat(host.c_str(), &st) != 0) return;  // this host has none
    if (S_ISLNK(st.st_mode) && dir) {
      std::error_code ec;
      const std::string target = std::filesystem::read_symlink(host, ec).string();
      const std::string at = restored + host;
      if (ec) return;
      if (std::filesystem::is_symlink(std::filesystem::symlink_status(at, ec))) {
        if (std::filesystem::read_symlink(at, ec).string() != target) problem = "the snapshot holds a symbolic link at '" + host + "'";
        return;
      }
      if (std::filesystem::exists(std::filesystem::symlink_status(at, ec))) {
        problem = "the snapshot holds '" + host + "', which the sandbox links as the host does";
        return;
      }
      if (auto why = sandbox_mount_point(restored, parent_of(host), true, false); !why.empty()) {
        problem = why;
        return;
      }
      if (::symlink(target.c_str(), at.c_str()) != 0) problem = "cannot link '" + at + "': " + std::strerror(errno);
      return;
    }
    if (dir != S_ISDIR(::stat(host.c_str(), &st) == 0 ? st.st_mode : 0)) return;
    if (auto why = sandbox_mount_point(restored, host, dir); !why.empty()) {
      problem = why;
      return;
    }
    conf.binds.emplace_back(host, host);
  }

  // What any dynamically linked server needs: the libraries, the loader's
  // cache, the user and group names, the local time, and /dev's harmless
  // nodes. An /etc file the snapshot holds itself (backed up as a file the
  // configuration names) serves as well and is left.
  void host_basics() {
    for (const char* p : {"/lib", "/lib64", "/lib32", "/usr/lib", "/usr/lib64", "/usr/lib32"}) bind(p, true);
    for (const char* p : {"/etc/ld.so.cache", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/localtime", "/dev/null", "/dev/zero",
                          "/dev/urandom", "/dev/random"}) {
      std::error_code ec;
      if (std::string_view(p).starts_with("/etc/") && std::filesystem::is_regular_file(std::filesystem::symlink_status(restored + p, ec)))
        continue;
      bind(p, false);
    }
  }
};

}  // namespace drill_internal

}  // namespace cairn::agent
