#pragma once
// Rebuilding the controller's catalog from what its repositories hold, when
// the controller's disk is lost (`cairnctl catalog rebuild`,
// docs/operations.md § Catalog rebuild).
//
// Every snapshot an agent stores is tagged with its backup set, task,
// component, the agent's name and CURVE key, and for a backup its set's task
// count and policy (agent/task_runner.cc). From these the rebuild recreates:
//  - agents, as `pending`: the repository proves nothing about trust, so an
//    operator approves each again when it connects (same key, same identity);
//  - backup sets and their tasks and snapshots, with their outcome. A set
//    whose signed record (controller/set_record.h; written by the controller
//    when the set ended) verifies under a trusted controller key is taken
//    from the record alone: its tasks, agents, snapshots and state; a
//    snapshot that claims the set but the record does not list is left out
//    and reported. A set no verified record covers is built from the tags
//    (`complete` only when it holds a snapshot for every task it had and none
//    is partial) and is `unattested`: anyone holding the repository password
//    could have written it, so it is not restored without the operator's
//    --accept-unattested.
//  One bad object (a snapshot reusing another's task id, a record that does
//  not verify) is reported and left out; the rebuild goes on.
// Safety backups (taken before a restore) and snapshots without cairn's tags
// are left out and counted. Nothing in the repositories is changed.
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/plan/signing_key.h"
#include "common/repo/snapshot.h"
#include "controller/catalog/catalog.h"
#include "controller/set_record.h"

namespace cairn::controller {

struct RebuildSource {
  std::string name;  // the repository's name, as the agents declare it
  std::string path;
  std::string password_file;       // mode 0600
  std::string credentials_file{};  // a remote repository's (mode 0600); empty: the store's standard sources
};

struct RebuildReport {
  size_t sets = 0, sets_complete = 0, snapshots = 0, agents = 0;
  size_t sets_attested = 0;       // taken from a verified set record
  size_t records_unverified = 0;  // set records whose signature or key did not verify
  size_t snapshots_unlisted = 0;  // claimed an attested set its record does not list
  size_t skipped_safety = 0, skipped_untagged = 0, skipped_unreadable = 0;
  std::vector<std::string> notes;  // one line each: what was left out and why
};

// A snapshot with cairn's tags (set, task, component, agent, agent-key),
// read from the repository it names.
struct TaggedSnapshot {
  repo::Snapshot snap;
  std::string repository;
  std::map<std::string, std::string> tags;
};

// The snapshot's tags as a map; nullopt with why set when it is not a backup
// task's snapshot that can be put in a catalog (no cairn tags, a safety
// backup: why starts with "safety", no agent tags).
std::optional<TaggedSnapshot> tagged(repo::Snapshot s, const std::string& repository, std::string& why);

// One set's catalog rows from its snapshots (one per task; a second copy of
// a task's snapshot is passed over), its agents found by key or added as
// pending (agent_ids: key hex -> id, shared across sets). The state follows
// the snapshots: complete only when every task the set had left a snapshot
// and none is partial. Returns nullopt when no task remains; notes gets a line
// for what was left out and for a set that is not complete.
std::optional<catalog::RebuiltSet> build_set(catalog::Tx& tx, const std::string& set_id, const std::vector<TaggedSnapshot>& found,
                                             std::map<std::string, std::string>& agent_ids, std::vector<std::string>& notes);

// Takes the data directory (no controller may run on it) and refuses, before
// reading anything, when a catalog is there. Throws cairn::Error.
// trusted: the controller keys whose set records are believed (its
// controller-signing.pub, and any older keys the operator names).
RebuildReport rebuild_catalog(const std::string& data_dir, const std::vector<RebuildSource>& repositories,
                              const std::vector<plan::PublicKey>& trusted);

// ---- export and import --------------------------------------------------
//
// An export carries the set's record, signed by the controller when the set
// was exported (`cairnctl export` asks it: OperatorApi's attest_export),
// naming each task's snapshot in the export's own repository as a copy in
// the repository "export:<archive name>". Blob ids are keyed per repository,
// so a snapshot's id changes with every copy; the record binds the ids it has
// in the archive, and an import checks that the archive's snapshots are
// those (every blob of the archive's repository is read and checked against
// its id before anything is copied). A set is imported as attested only from
// a record that verifies; anything else (no record, a record that does not
// verify, a snapshot it does not name) is refused unless the operator gives
// --accept-unattested, and then recorded unattested.
inline constexpr const char* kExportCopyPrefix = "export:";

struct ExportedSnapshot {
  std::string export_id;  // the snapshot's id in the export's repository
  std::string task_id;    // its task tag
};

using TrustedKeys = std::function<const plan::PublicKey*(const std::string& key_id)>;

// The record (the signed file's JSON text) verified under `trusted`, naming set
// `set_id` and every exported snapshot as its task's copy in an "export:"
// repository; nullopt with why set otherwise.
std::optional<SetRecord> verify_export_record(const std::string& record_text, const std::string& set_id,
                                              const std::vector<ExportedSnapshot>& exported, const TrustedKeys& trusted, std::string& why);

// The refusal of an import whose record does not attest it (why: verify_export_record's).
std::string unattested_refusal(const std::string& why);

// The controller's own signing keys (every key its catalog knows: active,
// standby and retired) and `extra` (--trusted-key), as a lookup by key id.
// The lookup keeps a reference to tx: use it inside the transaction.
TrustedKeys controller_keys(const catalog::Tx& tx, const std::vector<plan::PublicKey>& extra,
                            std::map<std::string, plan::PublicKey>& storage);

struct ImportAttestation {
  std::string record_text;               // the export's signed record; empty when it has none
  std::vector<std::string> export_ids;   // beside snapshot_ids: each snapshot's id in the export
  std::vector<plan::PublicKey> trusted;  // besides the controller's own keys (--trusted-key)
  bool accept_unattested = false;
};

// cairnctl import: records the backup set whose snapshots (by id) are in
// repository `source` now, in a running controller's catalog. Every snapshot
// must belong to one set; a set the catalog has already is refused
// (Errc::exists); a set whose record does not verify is refused
// (Errc::denied) unless att.accept_unattested. Throws cairn::Error naming
// what is wrong.
struct ImportResult {
  catalog::RebuiltSet set;
  std::vector<std::string> notes;
  std::string key_id;  // the controller key the record verified under; empty: unattested
};
ImportResult import_set(catalog::Catalog& cat, const RebuildSource& source, const std::vector<std::string>& snapshot_ids,
                        const std::string& actor, const std::string& origin, const ImportAttestation& att);

}  // namespace cairn::controller
