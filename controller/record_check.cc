// A repository's set records against its snapshots (record_check.h).
#include "controller/record_check.h"

#include <algorithm>
#include <iterator>
#include <map>

#include "controller/set_record.h"

namespace cairn::controller {
namespace {

// The repositories a record places snapshots in.
std::set<std::string> names_of(const SetRecord& r) {
  std::set<std::string> out;
  for (const auto& t : r.tasks) {
    if (!t.snapshot_id.empty() && !t.repository.empty()) out.insert(t.repository);
    for (const auto& [repository, snapshot] : t.copies) out.insert(repository);
  }
  return out;
}

std::string quoted_list(const std::set<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "'" : ", '") + n + "'";
  return out;
}

}  // namespace

RecordCheck check_set_records(const std::vector<StoredRecord>& records, const std::set<std::string>& present, const std::string& name,
                              const TrustedKeyLookup* trusted) {
  RecordCheck out;
  out.records = records.size();
  out.verified = trusted != nullptr;
  std::map<std::string, SetRecord> newest;  // set id -> its newest record taken
  std::vector<RecordProblem> untrusted;
  for (const auto& stored : records) {
    if (!stored.file) {
      out.problems.push_back({stored.name, "", "it cannot be read: " + stored.error, true, false});
      continue;
    }
    std::string why;
    std::optional<SetRecord> rec = trusted ? verify_set_record(*stored.file, *trusted, why) : read_set_record_unverified(*stored.file, why);
    if (!rec) {
      // Which set it claims, for the message: its body unverified.
      std::string ignored;
      auto claimed = read_set_record_unverified(*stored.file, ignored);
      untrusted.push_back({stored.name, claimed ? claimed->set_id : "", why, true, trusted && claimed});
      continue;
    }
    auto& best = newest[rec->set_id];
    if (best.set_id.empty() || rec->signed_at > best.signed_at) best = std::move(*rec);
  }
  // One that does not verify beside one of the same set that does: an older
  // key's after a rotation, or a record of a key not given. Named, not an error.
  for (auto& p : untrusted) {
    if (!p.set_id.empty() && newest.count(p.set_id)) p.error = false;
    out.problems.push_back(std::move(p));
  }
  out.sets = newest.size();
  if (newest.empty()) return out;

  if (!name.empty()) {
    out.names = {name};
  } else {
    for (const auto& [set_id, r] : newest)
      for (const auto& t : r.tasks) {
        if (!t.snapshot_id.empty() && present.count(t.snapshot_id)) out.names.insert(t.repository);
        for (const auto& [repository, snapshot] : t.copies)
          if (present.count(snapshot)) out.names.insert(repository);
      }
    if (out.names.empty()) {
      // None of what they list is here: the name every record gives.
      std::optional<std::set<std::string>> common;
      std::set<std::string> all;
      for (const auto& [set_id, r] : newest) {
        auto n = names_of(r);
        if (n.empty()) continue;  // a set that left no snapshot
        all.insert(n.begin(), n.end());
        if (!common) {
          common = n;
        } else {
          std::set<std::string> both;
          std::set_intersection(common->begin(), common->end(), n.begin(), n.end(), std::inserter(both, both.end()));
          common = std::move(both);
        }
      }
      if (common && common->size() == 1) {
        out.names = *common;
      } else if (!all.empty()) {
        out.unknown_name = "none of the snapshots its set records list is here, and they name the repositories " + quoted_list(all) +
                           ": give --repository-name to say which this is";
        return out;
      }
    }
  }
  std::set<std::string> seen;
  auto add = [&](const SetRecord& r, const SetRecord::Task& t, const std::string& repository, const std::string& id, bool copy) {
    if (id.empty() || !out.names.count(repository) || !seen.insert(id).second) return;
    RecordedSnapshot s{id, r.set_id, t.id, t.agent_name, t.component, repository, r.created_at, copy};
    if (!present.count(id)) out.missing.push_back(s);
    out.recorded.push_back(std::move(s));
  };
  for (const auto& [set_id, r] : newest)
    for (const auto& t : r.tasks) {
      add(r, t, t.repository, t.snapshot_id, false);
      for (const auto& [repository, snapshot] : t.copies) add(r, t, repository, snapshot, true);
    }
  return out;
}

}  // namespace cairn::controller
