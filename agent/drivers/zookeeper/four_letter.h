#pragma once
// ZooKeeper's four-letter words (`ruok`, `srvr`, `mntr`) over the client
// port: the server's version, mode, zxid and znode count. A word not in the
// server's `4lw.commands.whitelist` is answered "<word> is not executed
// because it is not in the whitelist." — reported as such, with the setting
// to change.
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace cairn::agent::zookeeper {

struct ServerStatus {
  std::string version;  // "3.8.0-..., built on ..."
  std::string mode;     // leader, follower, observer, standalone, read-only
  uint64_t zxid = 0;
  uint64_t node_count = 0;
  bool has_zxid = false, has_node_count = false;
  std::optional<uint64_t> ephemerals;  // mntr only
};

// True when the reply is ZooKeeper's refusal of a word not whitelisted.
bool is_not_whitelisted(std::string_view reply);
// Parses a `srvr` (or `stat`) reply ("Key: value" lines). Throws
// cairn::Error(invalid_input) when it has no "Zookeeper version" line.
ServerStatus parse_srvr(std::string_view reply);
// Parses a `mntr` reply (tab-separated "zk_key value" lines) into the same
// fields. Throws cairn::Error(invalid_input) when it has no zk_version.
ServerStatus parse_mntr(std::string_view reply);
std::map<std::string, std::string> parse_mntr_fields(std::string_view reply);

// Sends one word to address ("host:port") and returns the reply. Throws
// cairn::Error(io) when the server cannot be reached, and
// cairn::Error(unsupported) naming the word and `4lw.commands.whitelist` when
// the server refuses it.
std::string four_letter(const std::string& address, const std::string& word, std::chrono::milliseconds timeout = std::chrono::seconds(5));

}  // namespace cairn::agent::zookeeper
