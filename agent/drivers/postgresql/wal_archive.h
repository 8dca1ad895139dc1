#pragma once
// The WAL archive socket (docs/postgresql.md § WAL archive): PostgreSQL's
// archive_command runs `cairn-agent wal-push --socket SOCKET %p`, which hands
// the file's path to this agent over a local unix socket (one JSON line each
// way; a dead agent is a closed connection at once); the agent checks
// the file and stores it in the component's repository, and only then answers
// success. Anything else (agent down, repository unreachable, a damaged
// segment) is a failure: PostgreSQL keeps the segment and tries again.
//
// The socket is mode 0660, group of the data directory (the server's group),
// and each peer's uid (SO_PEERCRED) must be the data directory's owner or
// root: only the server's own user hands files over, and only files in
// <data_dir>/pg_wal with a WAL file's name are taken.
#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agent/driver.h"
#include "common/util/fs.h"

namespace cairn::agent::postgresql {

class WalArchive {
 public:
  WalArchive(std::string component, std::string socket_path, std::string data_dir);
  ~WalArchive();
  // Binds the socket and serves on a thread of its own. Throws cairn::Error.
  void start(BackgroundContext ctx);
  void stop();
  // How to ask the server what it archived last (pg_stat_archiver): asked
  // once as the archive starts, for the status until this agent stores a file.
  void set_server_view(std::function<std::pair<std::string, int64_t>()> f) { server_view_ = std::move(f); }
  // How often the repository's WAL is checked for gaps (check_now), the
  // first time a few seconds after start.
  void set_check_interval(std::chrono::seconds s) { check_interval_ = s; }
  // Reads the repository's WAL of this database system and records its gaps
  // (recovery.h find_gaps) for status(). Public for tests.
  void check_now();

  // Its progress for the heartbeat: the newest file stored, failures, and
  // how many files the server waits to hand over (its .ready markers).
  cairn::v1::WalArchiveStatus status() const;

  // One request: {"op":"push","path":...}; the reply {"ok":true,"snapshot":...}
  // or {"ok":false,"error":...}. Public for unit tests.
  std::string handle(const std::string& request);

 private:
  void serve();
  std::string push(const std::string& path);
  // Writes checked bytes to a file of the agent's own (a 0700 directory made
  // at the first call, removed at stop); returns its path.
  std::string private_copy(const std::string& name, const Bytes& bytes, const struct stat& like);
  // The agent's own 0700 directory for copies and scratch files (made at the
  // first call, in BackgroundContext::private_dir when given; removed at stop).
  std::string scratch_dir();

  std::string component_, socket_, data_dir_;
  BackgroundContext ctx_;
  std::atomic<bool> stop_{false};
  std::thread thread_, checker_;
  std::chrono::seconds check_interval_{600};
  // Files stored by this process: name -> sha256 of their bytes. A repeated
  // push of the same bytes (PostgreSQL retrying after a lost answer) is
  // answered at once; other bytes under a stored name are refused.
  std::map<std::string, std::string> stored_;
  uid_t owner_uid_ = 0;
  std::string private_dir_;
  std::mutex scratch_mu_;
  std::function<std::pair<std::string, int64_t>()> server_view_;
  mutable std::mutex mu_;  // guards what status() reads
  std::string last_archived_, last_error_;
  int64_t last_archived_at_ = 0, last_error_at_ = 0;
  uint64_t failures_ = 0;
  std::vector<cairn::v1::WalGap> gaps_;
  int64_t checked_at_ = 0;
  std::string check_error_;
  uint64_t last_segno_ = 0;
  uint32_t last_timeline_ = 0;
};

// The client side: archive_command's `cairn-agent wal-push`. Returns the exit
// status (0 stored; 1 not stored, why on stderr).
int wal_push_main(const std::string& socket_path, const std::string& file, std::chrono::seconds timeout);

}  // namespace cairn::agent::postgresql
