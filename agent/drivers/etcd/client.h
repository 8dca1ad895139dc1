#pragma once
// A client of one etcd member's v3 gRPC API: the few calls the driver needs
// (Status, MemberList, Range count, HashKV, Snapshot). Exactly one endpoint:
// a snapshot must come from one member (etcd refuses nothing, but a client
// that balances across members could stitch a stream from two). Plain or TLS
// (CA, optional client certificate); with user and password it authenticates
// once and sends the token as the "token" metadata of every call, as etcd's
// own clients do.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::agent::etcd {

struct ClientOptions {
  // "http://host:port" or "https://host:port" (https: TLS).
  std::string endpoint;
  std::string ca_file;                        // PEM; empty with https: the system's roots
  std::string cert_file;                      // PEM client certificate; with key_file
  std::string key_file;                       // PEM private key (a secret file: 0600)
  std::string user, password;                 // empty user: no authentication
  std::chrono::milliseconds timeout{10'000};  // each unary call
};

struct MemberStatus {
  std::string version;
  uint64_t cluster_id = 0, member_id = 0;
  int64_t revision = 0;
  uint64_t raft_term = 0, raft_index = 0, raft_applied_index = 0;
  int64_t db_size = 0, db_size_in_use = 0;
  uint64_t leader = 0;  // 0: the member knows no leader
  bool is_learner = false;
  std::vector<std::string> errors;  // e.g. an alarm ("NOSPACE")
};

struct Member {
  uint64_t id = 0;
  std::string name;
  std::vector<std::string> peer_urls, client_urls;
  bool is_learner = false;
};

struct KvHash {
  uint32_t hash = 0;
  int64_t compact_revision = 0;
  int64_t revision = 0;  // the header's: the member's current revision
};

struct SnapshotResult {
  uint64_t db_size = 0;  // the database, without the hash
  uint64_t bytes = 0;    // everything streamed (database and hash)
  std::string sha256;    // hex, the trailing hash (checked)
};

// Member ids as etcd prints them: lowercase hex without leading zeros.
std::string id_hex(uint64_t id);

class Client {
 public:
  // Reads the TLS files (errors name them) and, with a user, authenticates.
  // Throws cairn::Error: Errc::invalid_input for a bad endpoint or unreadable
  // file, Errc::io when the member cannot be reached or refuses.
  explicit Client(ClientOptions opt);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const std::string& endpoint() const;
  MemberStatus status();
  // True when something answers at the endpoint, even with a refusal (e.g.
  // of the credentials); false only when nothing does (unreachable, timeout).
  bool answers();
  std::vector<Member> members();
  // Keys in the whole keyspace at revision (0: now).
  int64_t count_keys(int64_t revision = 0);
  KvHash hash_kv(int64_t revision = 0);
  // Streams the member's database: on_data gets every piece as it arrives,
  // in order, the trailing 32-byte hash included. Returns when the stream
  // ended and checked; throws cairn::Error otherwise (the gRPC error or what
  // the check found; Errc::interrupted when *cancel became true). A stream
  // that brings nothing for `stall` is cancelled.
  SnapshotResult snapshot(const std::function<void(std::string_view)>& on_data, const std::atomic<bool>* cancel = nullptr,
                          std::chrono::milliseconds stall = std::chrono::seconds(60));

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cairn::agent::etcd
