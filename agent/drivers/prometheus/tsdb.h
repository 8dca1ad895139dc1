#pragma once
// What a TSDB directory (a data dir or one of its snapshots) holds, read from
// the blocks' meta.json files: recorded with each backup, checked on restore.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace cairn::agent::prometheus {

struct BlockSet {
  size_t blocks = 0;
  int64_t min_time = 0, max_time = 0;  // ms since the epoch; valid when blocks > 0 (max exclusive)
  uint64_t samples = 0;                // sum of the blocks' stats.numSamples
  uint64_t bytes = 0;                  // sizes of the blocks' files
  std::vector<std::string> ulids;
  std::vector<std::string> problems;  // an unreadable meta.json, named
  nlohmann::json to_json() const;     // the part recorded in the snapshot's metadata
};

// Reads every <dir>/<ULID>/meta.json. A directory without meta.json (the
// WAL, chunks_head, a block being written) is not a block.
BlockSet read_blocks(const std::string& dir);

// Bytes under a directory (files only); 0 when missing.
uint64_t tree_bytes(const std::string& dir);

}  // namespace cairn::agent::prometheus
