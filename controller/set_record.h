#pragma once
// A backup set's record, signed by the controller when the set ends and
// stored in each repository holding its snapshots (`sets/`, encrypted like
// every object; docs/repository-format.md § Set records). Snapshot tags are
// written by agents, and any agent with the repository's password can write
// any tag; the record is what only the controller could have written: which
// tasks the set had, which agent (name and CURVE key) ran each, which
// snapshot each left and how each ended. `cairnctl catalog rebuild` takes a
// set as attested only from a record whose signature verifies under a
// controller key it was given; a set built from tags alone is `unattested`
// and is not restored without the operator's --accept-unattested.
//
// The signature covers PAE("application/vnd.cairn.set-record+json", body)
// (the envelope's DSSE encoding), where body is the record's JSON text as
// stored, so nothing is canonicalised: the verifier parses only after the
// signature verified.
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/plan/signing_key.h"
#include "controller/catalog/types.h"

namespace cairn::catalog {
class Tx;
}

namespace cairn::controller {

struct SetRecord {
  struct Task {
    std::string id;
    std::string agent_name;
    std::string agent_key;  // hex of the agent's CURVE public key
    std::string component;
    std::string repository;
    std::string snapshot_id;  // "" when the task left none
    std::string cluster_id;
    std::string state;  // the task's end: succeeded, partial, failed, ...
    // A cluster backup: the cluster's members (agent names) when it was made.
    std::vector<std::string> members{};
    // Copies of the snapshot in other repositories (a policy's copy_to):
    // (repository, snapshot id there). A rebuild from a copy takes them as
    // attested as the original.
    std::vector<std::pair<std::string, std::string>> copies{};
  };
  std::string set_id;
  int64_t created_at = 0, finished_at = 0;
  int64_t signed_at = 0;  // unix seconds; a later record of one set replaces an earlier one
  std::string state;      // complete, partial, failed
  std::string trigger;
  std::string policy;
  std::vector<Task> tasks;
};

inline constexpr const char* kSetRecordType = "application/vnd.cairn.set-record+json";

// The record's body (JSON text) and the file stored in the repository:
// {"body": "...", "key_id", "public_key", "signature"}.
std::string set_record_body(const SetRecord& r);
nlohmann::json sign_set_record(const SetRecord& r, const plan::SigningKey& key);

// Verifies a stored record: the signature under a key `trusted` knows (by
// key id), then parses the body. nullopt with `why` set otherwise (an
// untrusted key, a bad signature, a malformed body).
std::optional<SetRecord> verify_set_record(const nlohmann::json& file,
                                           const std::function<const plan::PublicKey*(const std::string& key_id)>& trusted,
                                           std::string& why);

// A stored record's body parsed without its signature checked: for
// `cairnctl repo check` without a controller key (it says so). Anyone with
// the repository's password could have written what it returns.
std::optional<SetRecord> read_set_record_unverified(const nlohmann::json& file, std::string& why);

// The record of a set as the catalog holds it (an ended backup set and its
// tasks, with their agents' names and keys).
SetRecord record_from_catalog(const catalog::Tx& tx, const catalog::BackupSet& set, int64_t now);

}  // namespace cairn::controller

#include <map>
#include <memory>

#include "controller/config.h"
#include "controller/job_worker.h"

namespace cairn::repo {
class Repository;
}

namespace cairn::controller {

// Writes signed set records to the controller's declared repositories, on a
// thread of its own (a repository's first open derives its key; a prune on
// the maintenance worker may run for minutes). A record is a new
// content-addressed object: no lock is needed, and writing one again is
// harmless.
class SetRecordWriter {
 public:
  struct Job {
    std::string set_id;
    std::string key_id;
    nlohmann::json file;                    // sign_set_record's
    std::vector<std::string> repositories;  // declared names
  };
  struct Result {
    Job job;
    std::vector<std::string> written;
    std::map<std::string, std::string> errors;  // repository -> what failed
  };
  // config: the controller's, alive as long as the writer (its [[repository]]s).
  // Both in set_record.cc, where repo::Repository is complete.
  explicit SetRecordWriter(const ControllerConfig& config);
  ~SetRecordWriter();

  void submit(Job job) { worker_.submit(std::move(job)); }
  size_t in_flight() const { return worker_.in_flight(); }
  std::vector<Result> take_results() { return worker_.take_results(); }

 private:
  Result run(const Job& job);
  repo::Repository& open(const ControllerConfig::Repository& r);

  const ControllerConfig& config_;
  std::map<std::string, std::unique_ptr<repo::Repository>> open_;  // worker thread only
  JobWorker<Job, Result> worker_;                                  // last: its thread uses the members above
};

// Removes the records of these sets from an open repository (retention
// forgot them). Returns how many were removed; a record that cannot be read
// is left as it is.
size_t remove_set_records(repo::Repository& r, const std::set<std::string>& set_ids);

}  // namespace cairn::controller
