#pragma once
// A Kafka broker's log directories on disk: what is in them, what a backup
// takes and in which order, and the swap of a restore. Plain file operations
// (links, copies, renames), unit-tested without a broker.
//
// Backup of one log dir, gathered in a staging directory OUTSIDE it (a broker
// refuses to start with a directory it cannot parse as topic-partition in
// its log dir, as it does with lost+found) but on the same filesystem, so
// finished segments are hard links:
//   1. the checkpoint files (recovery point, high watermark, log start,
//      cleaner), meta.properties and KRaft's bootstrap.checkpoint are copied
//      FIRST: the recovery point recorded is never ahead of the data taken;
//   2. per partition directory: the segments wholly below the high watermark
//      just read (the next segment's base offset <= HW) are hard-linked with
//      their indexes; the others (the active segment, a segment a follower
//      may still truncate) are copied, without their indexes (preallocated,
//      rebuilt by the broker's recovery); leader-epoch-checkpoint,
//      partition.metadata, producer snapshots and KRaft's quorum-state are
//      copied; KRaft snapshots (*.checkpoint, written once) are linked;
//   3. skipped: .lock, .kafka_cleanshutdown, *.deleted, *.cleaned, *.swap,
//      *.part, *-delete/, *-future/, *-stray/, remote-log-index-cache/, and any
//      directory that is not topic-partition.
// Offline (the broker stopped), every file is final: everything is linked.
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace cairn::agent::kafka {

// meta.properties: `cluster.id`, `node.id` (KRaft) or `broker.id` (ZooKeeper).
struct MetaProperties {
  std::map<std::string, std::string> props;
  std::string cluster_id;
  std::string node_id;  // node.id, else broker.id; empty when neither
};
// Reads <log_dir>/meta.properties; nullopt when there is none. Throws
// cairn::Error naming the file when it is malformed.
std::optional<MetaProperties> read_meta_properties(const std::string& log_dir);
// A Java properties file's key=value lines (comments and blanks skipped).
std::map<std::string, std::string> parse_properties(const std::string& text);

// An offset checkpoint file: "0\n<count>\n<topic> <partition> <offset>\n...",
// keyed by "<topic>-<partition>". Empty when the file does not exist; throws
// cairn::Error naming the file and line when it is malformed.
std::map<std::string, int64_t> read_offset_checkpoint(const std::string& path);

inline constexpr const char* kRecoveryCheckpoint = "recovery-point-offset-checkpoint";
inline constexpr const char* kHighWatermarkCheckpoint = "replication-offset-checkpoint";
inline constexpr const char* kLogStartCheckpoint = "log-start-offset-checkpoint";
inline constexpr const char* kCleanerCheckpoint = "cleaner-offset-checkpoint";

// True for a directory name a broker loads as a partition: "<topic>-<n>".
bool is_partition_dir_name(const std::string& name);
// True for what a backup leaves out (see above). is_dir: the entry is a directory.
bool skipped(const std::string& name, bool is_dir);

// Walks a segment's record batches (any message format) to its end.
struct SegmentEnd {
  uint64_t next_offset = 0;  // one past the last offset of the last whole batch (base when none)
  uint64_t valid_bytes = 0;  // bytes of whole batches
  uint64_t batches = 0;
  bool torn = false;  // bytes after the last whole batch (an append caught midway, preallocation)
};
SegmentEnd scan_segment(const std::string& path, uint64_t base_offset);

struct PartitionPositions {
  int64_t log_start = -1;       // from log-start-offset-checkpoint, else the first segment's base
  int64_t log_end = -1;         // the next offset after the last whole batch taken
  int64_t high_watermark = -1;  // from replication-offset-checkpoint (-1: none recorded)
  int64_t recovery_point = -1;
  uint64_t segments = 0, bytes = 0;
};

struct StageSpec {
  std::string log_dir;
  std::string staging;   // created; must not exist; same filesystem as log_dir
  bool offline = false;  // the broker is stopped: link everything
};

struct Staged {
  uint64_t files_linked = 0, files_copied = 0, bytes = 0;
  std::map<std::string, PartitionPositions> partitions;  // "<topic>-<n>"
  std::vector<std::string> skipped_dirs;                 // directories left out that are not Kafka's own leftovers
  std::vector<std::string> notes;
  std::optional<MetaProperties> meta;
};

// Throws cairn::Error naming what failed; what it created is removed first.
// A file that vanishes between listing and linking (retention, compaction)
// is left out if it was a segment being deleted, otherwise the whole
// partition is taken again (3 tries).
Staged stage(const StageSpec& spec);

// The swap of a restore: `restored` (a log dir restored from the snapshot,
// on the same filesystem) becomes log_dir; the log dir there is renamed
// <log_dir>.cairn-old-<stamp> and kept. The broker must be stopped. Returns
// where the old one went ("" when there was none). Throws when nothing moved.
std::string swap_in(const std::string& restored, const std::string& log_dir, const std::string& stamp);
// Puts <old> back as log_dir, setting the restored one aside as
// <log_dir>.cairn-failed-<stamp>. Returns where the restored one went. A
// swap planned but never made (<old> named but not there) changes nothing.
std::string swap_back(const std::string& log_dir, const std::string& old, const std::string& stamp);

}  // namespace cairn::agent::kafka
