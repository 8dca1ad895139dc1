#pragma once
// What a repository's signed set records (controller/set_record.h) say it
// must hold, against what it holds: `cairnctl repo check` names every
// snapshot a record lists in this repository that is not there
// (docs/operations.md § Verification). A repository holds the record of
// every set with a snapshot in it (a task's, or a copy the controller made
// there), and retention removes a set's records before its snapshots
// (controller/maintenance.cc): a record present means its snapshots must be.
//
// Which repository is "this" one: records name repositories by the names the
// agents and the controller declare, which the repository does not know. A
// snapshot id is keyed per repository (a copy has another id), so a name
// whose listed snapshots are here names this repository; when none is here
// (every snapshot deleted), the one name every record gives is this
// repository's; failing both, the operator names it (--repository-name).
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/plan/signing_key.h"

namespace cairn::controller {

// One object under sets/, as read from the repository.
struct StoredRecord {
  std::string name;
  std::optional<nlohmann::json> file;  // nullopt: it could not be read (error says why)
  std::string error{};
};

// A snapshot a record says this repository holds.
struct RecordedSnapshot {
  std::string snapshot_id, set_id, task_id, agent, component;
  std::string repository;  // the name the record gives it
  int64_t made_at = 0;     // the set's start (unix seconds): records keep no time per task
  bool copy = false;       // a copy the controller made here (a policy's copy_to)
};

struct RecordProblem {
  std::string record;  // its object name
  std::string set_id;  // "" when not even its body could be read
  std::string why;
  bool error = true;       // false: another record of the set verifies (an older key's, after a rotation)
  bool untrusted = false;  // readable, but its signature or key does not verify (else: unreadable or malformed)
};

struct RecordCheck {
  size_t records = 0;                      // objects under sets/
  size_t sets = 0;                         // sets with a record taken (the newest of each set)
  bool verified = false;                   // signatures checked under trusted keys
  std::set<std::string> names;             // the names the records give this repository
  std::vector<RecordedSnapshot> recorded;  // what they say is here, one per snapshot id
  std::vector<RecordedSnapshot> missing;   // of those, what is not
  std::vector<RecordProblem> problems;     // records unreadable, malformed or not verifying
  // Not empty when this repository cannot be told among the names the
  // records give (and no snapshot they list is here): nothing was compared.
  std::string unknown_name{};
};

using TrustedKeyLookup = std::function<const plan::PublicKey*(const std::string& key_id)>;

// present: the snapshot ids listed here. name: the repository's name as the
// records give it ("": found as above). trusted: keys to verify under;
// nullptr reads every record unverified.
RecordCheck check_set_records(const std::vector<StoredRecord>& records, const std::set<std::string>& present, const std::string& name,
                              const TrustedKeyLookup* trusted);

}  // namespace cairn::controller
