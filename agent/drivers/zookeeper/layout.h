#pragma once
// What a ZooKeeper server keeps on disk and which of it makes a consistent
// backup. Pure file logic, no server and no repository: the driver and its
// unit tests share it.
//
// ZooKeeper's snapshots are fuzzy: the state is the newest *valid* snapshot
// replayed with the transaction logs from the last log that starts at or
// before the snapshot's zxid onward (FileTxnLog.getLogFiles). A snapshot is
// written straight to its final name, so the newest one may still be being
// written; it is valid only once its trailer is there (SnapStream.isValidSnapshot,
// ZooKeeper 3.8): at least 10 bytes, ending with the 4-byte big-endian length 1
// and the byte '/' (the path marker written after the Adler32 checksum by
// SnapStream.sealStream). Compressed snapshots (`.gz`, `.snappy`) are judged
// by their magic header, as ZooKeeper does.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::agent::zookeeper {

// The parts of zoo.cfg (a Java properties file) the driver needs.
struct ZooConfig {
  std::string path;
  std::map<std::string, std::string> props;  // every key=value, trimmed
  std::string data_dir;
  std::string data_log_dir;  // empty when not set (then the data dir holds the logs)
  std::string dynamic_config_file;
  std::string client_port_address;
  int client_port = 0;
  // "server.N=..." entries of zoo.cfg and of the dynamic file, keyed by N.
  std::map<uint64_t, std::string> servers;
};

// Parses zoo.cfg text; `path` only names the file in errors. Throws
// cairn::Error(invalid_input) for a line that is not a property.
ZooConfig parse_zoo_cfg(std::string_view text, const std::string& path);
// Reads zoo.cfg and, when it names one that exists, the dynamic config file
// (its server entries join `servers`). Throws cairn::Error naming the file.
ZooConfig read_zoo_cfg(const std::string& path);
// The client address of a "server.N" entry in the reconfig form
// ("host:2888:3888[:role];[clientHost:]clientPort"): {host, port}, host empty
// when only the port is given; nullopt without a client part.
std::optional<std::pair<std::string, int>> client_of_server_entry(const std::string& value);
// A stable id for the ensemble from its server list: "zk-" and 16 hex digits
// of SHA-256 over the sorted entries (every member's zoo.cfg lists the same
// servers). A standalone server (no entries): "zk-standalone-<client port>".
std::string derive_cluster_id(const ZooConfig& cfg);

// zxid of "snapshot.<hex>[.ext]" / "log.<hex>" (prefix without the dot), as
// ZooKeeper's Util.getZxidFromName; nullopt when the name is not one.
std::optional<uint64_t> zxid_from_name(std::string_view name, std::string_view prefix);

enum class SnapshotCheck { valid, unreadable, too_short, no_trailer, bad_magic };
// ZooKeeper 3.8's SnapStream.isValidSnapshot on one file.
SnapshotCheck check_snapshot(const std::string& path);
std::string describe(SnapshotCheck c);

struct SkippedSnapshot {
  std::string path;
  std::string reason;
};

// What a consistent backup of one server holds.
struct Selection {
  std::string snapshot;  // the newest valid snapshot (full path)
  uint64_t snapshot_zxid = 0;
  std::vector<SkippedSnapshot> skipped;  // newer snapshots that are not valid (being written)
  // Logs, ascending by zxid: the last one starting at or before the snapshot's
  // zxid and every one after it. The last is the live one (appended to).
  std::vector<std::string> logs;
  std::vector<uint64_t> log_zxids;
};

// data_v2: <dataDir>/version-2; log_v2: <dataLogDir>/version-2 (may equal data_v2).
// Throws cairn::Error(not_found) when there is no valid snapshot, naming the
// directory and every snapshot passed over.
Selection select_files(const std::string& data_v2, const std::string& log_v2);

// One transaction log read from the start: FileHeader ("ZKLG", version,
// dbid), then entries of Adler32 (8 bytes), length (4), the transaction
// (TxnHeader: clientId 8, cxid 4, zxid 8, ...) and 'B'. Reading stops at a zero
// length (preallocated space), a short or partial entry, or a checksum that
// does not match: as ZooKeeper, what follows is not part of the log.
struct LogScan {
  bool header_ok = false;
  uint64_t txns = 0;
  uint64_t first_zxid = 0, last_zxid = 0;  // 0 when txns == 0
};
LogScan scan_log(const std::string& path);

// Contents of currentEpoch / acceptedEpoch (a decimal number); nullopt when
// the file is missing or does not hold one.
std::optional<uint64_t> read_epoch_file(const std::string& path);

// "0x1a2b" as srvr prints a zxid.
std::string zxid_hex(uint64_t zxid);
std::optional<uint64_t> parse_zxid(std::string_view text);  // "0x..." or decimal

}  // namespace cairn::agent::zookeeper
