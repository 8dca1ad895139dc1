#pragma once
// A restore's snapshot read back before anything is stopped (docs/protocol.md
// § The cluster restore, preflight): damage in the repository refuses the
// restore while every member still runs on its own data, instead of being met
// in the data step after some members stopped and swapped their data in.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agent/driver.h"
#include "common/repo/verify.h"

namespace cairn::agent {

// At most this many damaged blobs are named, one reason each, after the first
// reason (which says what to do); the rest are counted.
constexpr size_t kMaxDamageReasons = 5;

// Reads every tree and data blob of snapshot_id from ctx's repository and
// checks each as a restore does (repo/verify.h), reporting PHASE_VERIFY
// progress. Empty when the whole snapshot reads back. Otherwise the reasons,
// REPOSITORY_CORRUPT: the first says which snapshot of which repository cannot
// be read back, that nothing was stopped or changed and what to do; each next
// one names a damaged blob, its pack and the file of the snapshot it belongs
// to (item). A snapshot that cannot be read at all, or a cancel, gives one
// reason with the code of the error. stats, when given, gets what was read.
std::vector<cairn::v1::Reason> verify_restore_snapshot(TaskContext& ctx, const std::string& snapshot_id,
                                                       repo::VerifyResult* stats = nullptr);

// What a read back read, for the task's metadata: {"bytes", "blobs", "trees",
// "packs", "bytes_read", "seconds"}.
nlohmann::json read_back_json(const repo::VerifyResult& r);

}  // namespace cairn::agent
