#pragma once
// A member's record of a restore in steps (etcd, ZooKeeper, Kafka; the
// table in docs/protocol.md § Restore records). One format for every
// driver, in the one file each driver names (Driver::restore_record_files):
//
//   {"format": 1, "restore_id": ..., "task_id": ..., "member": ...,
//    "step": "data", "state": "data" | "rolled_back", "time": ...,
//    "payload": {the driver's own: what it moved, where it went}}
//
// The data step writes it (whole, by an fsynced rename) before it moves
// anything; only a step of the same restore acts on it: the rollback puts
// back what the payload says and removes it (etcd leaves a tombstone,
// state "rolled_back", so a late step of that restore is refused), the
// commit removes it. While it is on disk nothing the restore set aside is
// removed (set_aside.h). A record an older agent wrote (a flat object that
// names its restore as "restore") is read too: its other keys are the
// payload, so an agent upgraded between a restore's steps still rolls it back.
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "proto/restore_step.pb.h"

namespace cairn::agent {

struct StepRecord {
  std::string restore_id;                                      // the restore that wrote it: only that restore's steps act on it
  std::string task_id;                                         // the task that wrote it ("" in an older agent's record)
  std::string member;                                          // the component (etcd: the member's name)
  cairn::v1::RestoreStep step = cairn::v1::RESTORE_STEP_DATA;  // the step that wrote it
  bool rolled_back = false;                                    // a tombstone: that restore's rollback ran here
  nlohmann::json payload = nlohmann::json::object();
};

// Writes r to path: whole or not at all (a temporary file renamed, both
// fsynced), mode 0600. Throws cairn::Error.
void write_step_record(const std::string& path, const StepRecord& r);
// The record at path; nullopt when there is none. Throws cairn::Error
// (Errc::corrupt) when one is there but cannot be read: it is a file on
// disk, not a plan, and a record nobody can read is never taken for none.
std::optional<StepRecord> read_step_record(const std::string& path);
// Removes the record at path (none there is fine) and fsyncs its directory;
// throws cairn::Error.
void remove_step_record(const std::string& path);

}  // namespace cairn::agent
