#pragma once
// Repository check and index repair. check() verifies structure (key slots, index
// files, packs named by the index, snapshots and every tree they reach) and, with
// read_data, every byte of every pack. Problems are collected, never thrown: an
// operator wants the whole list, not the first failure.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/repo/progress.h"
#include "common/repo/repository.h"

namespace cairn::repo {

enum class Severity { error, warning };
const char* severity_name(Severity s);

struct CheckProblem {
  // key_slot, index_damaged, pack_missing, pack_truncated, pack_unindexed, pack_unexpected,
  // pack_damaged, pack_header, pack_index_mismatch, blob_damaged, blob_missing,
  // blob_unindexed, dictionary_damaged, snapshot_damaged, tree_damaged, tree_missing, tree_too_deep (deeper than
  // kMaxTreeDepth), snapshot_too_large (a warning: more entries than ls and restore walk),
  // temporary_leftover (a warning: .tmp- files of writes that never finished), dictionary_missing
  // (blobs the index flags as compressed with a dictionary, and dicts/ holds none),
  // config_damaged (the open read an earlier version of config the store keeps)
  std::string kind;
  Severity severity = Severity::error;
  std::string object;  // "data/ab/abcd…", "index/…", "snapshots/…", "keys/…", "blob/…"
  std::string message;
  std::vector<std::string> blobs;      // hex ids of the blobs concerned, if any
  std::vector<std::string> snapshots;  // affected snapshot ids
  std::vector<std::string> paths;      // affected file paths (at most kMaxPathsPerProblem)
  uint64_t paths_omitted = 0;          // further affected paths not listed
  // A whole earlier version of `object` the store keeps (recover.h), or "".
  std::string recoverable_version{};
};

constexpr size_t kMaxPathsPerProblem = 100;

struct CheckOptions {
  bool read_data = false;
  unsigned threads = 0;        // pack readers with read_data; 0: one per usable CPU, at most 8, as many as memory_budget holds
  uint64_t memory_budget = 0;  // bytes for buffers (memory.h); 0: resolve_memory_budget()'s default
  ProgressFn progress;
  std::chrono::milliseconds progress_interval{1000};
  const std::atomic<bool>* cancel = nullptr;
  // Called once the index is loaded, before anything else is read: it may
  // throw to stop the check (cairnctl refuses a budget below what the
  // repository needs, memory.h).
  std::function<void(const Index&)> index_loaded;
};

struct CheckReport {
  std::vector<CheckProblem> problems;
  uint64_t index_files = 0, packs = 0, pack_bytes = 0, blobs = 0, snapshots = 0, trees = 0;
  uint64_t packs_read = 0, bytes_read = 0, blobs_verified = 0;
  double seconds = 0;

  size_t errors() const;
  size_t warnings() const;
  bool clean() const { return errors() == 0; }
};

nlohmann::json problem_json(const CheckProblem& p);
// One line for a person: the message, then the affected snapshots and paths.
std::string problem_line(const CheckProblem& p);

// Loads the index itself (replacing what r.index() held) and reports its problems.
// Throws only Errc::interrupted (cancel) or when the backend cannot be listed.
CheckReport check(Repository& r, const CheckOptions& opt = {});

struct RepairIndexResult {
  std::vector<std::string> index_files;  // the index files written (none when there was nothing to index)
  std::vector<std::string> superseded;   // old index files, now removed
  uint64_t packs = 0, blobs = 0;
  std::vector<std::pair<std::string, std::string>> bad_packs;  // pack id, why its header is unreadable
};

// Rebuilds the index from pack headers: writes index files naming every old one
// in 'supersedes', then removes the old ones. Packs whose header cannot be read are
// left alone and listed in bad_packs. Reloads r.index() from the new file. The caller
// holds an exclusive lock.
RepairIndexResult repair_index(Repository& r, const ProgressFn& progress = {}, const std::atomic<bool>* cancel = nullptr);

}  // namespace cairn::repo
