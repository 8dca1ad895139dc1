// Catalog rebuild from snapshot tags (catalog_rebuild.h).
#include "controller/catalog_rebuild.h"

#include <sys/stat.h>

#include <algorithm>
#include <functional>
#include <map>
#include <set>

#include "common/repo/keys.h"
#include "common/repo/repository.h"
#include "common/repo/snapshot.h"
#include "common/repo/storage/backend.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "controller/catalog/catalog.h"
#include "controller/catalog/outcome.h"
#include "controller/data_dir.h"
#include "controller/driver_metadata.h"
#include "controller/maintenance.h"
#include "controller/set_record.h"

namespace cairn::controller {
namespace {

bool has(const repo::Snapshot& s, const std::string& tag) { return std::find(s.tags.begin(), s.tags.end(), tag) != s.tags.end(); }

std::unique_ptr<repo::Repository> open_source(const RebuildSource& r) {
  return open_controller_repository({r.name, r.path, r.password_file, r.credentials_file});
}

}  // namespace

std::optional<TaggedSnapshot> tagged(repo::Snapshot s, const std::string& repository, std::string& why) {
  TaggedSnapshot out;
  out.tags = repo::tag_values(s);
  if (!has(s, "cairn") || !out.tags.count("set") || !out.tags.count("task") || !out.tags.count("component")) {
    why = "it has no cairn set tags (set, task, component)";
    return std::nullopt;
  }
  if (has(s, "safety")) {
    why = "safety backup (taken before a restore)";
    return std::nullopt;
  }
  if (!out.tags.count("agent") || !out.tags.count("agent-key")) {
    why = "snapshot " + s.id.substr(0, 16) + " in '" + repository + "' (set " + out.tags["set"] +
          ") names no agent: written by an agent older than the agent tags; restore it with 'cairnctl repo restore'";
    return std::nullopt;
  }
  out.snap = std::move(s);
  out.repository = repository;
  return out;
}

std::optional<catalog::RebuiltSet> build_set(catalog::Tx& tx, const std::string& set_id, const std::vector<TaggedSnapshot>& found,
                                             std::map<std::string, std::string>& agent_ids, std::vector<std::string>& notes) {
  catalog::RebuiltSet s;
  s.id = set_id;
  s.created_at = INT64_MAX;
  size_t expected = 0;
  bool partial = false;
  std::map<std::string, bool> seen_task;
  for (const auto& f : found) {
    auto tag = [&](const char* k) {
      auto it = f.tags.find(k);
      return it == f.tags.end() ? std::string() : it->second;
    };
    if (seen_task[tag("task")]) {
      // One task, one snapshot: a copy in a second repository is the same
      // snapshot; another snapshot claiming the task is named.
      if (!std::any_of(s.tasks.begin(), s.tasks.end(), [&](const catalog::RebuiltTask& t) { return t.snapshot_id == f.snap.id; }))
        notes.push_back("set " + set_id + ": snapshot " + f.snap.id.substr(0, 16) + " in '" + f.repository + "' claims task " +
                        tag("task") + ", which another snapshot of the set has; left out");
      continue;
    }
    seen_task[tag("task")] = true;
    if (tx.task_exists(tag("task"))) {
      notes.push_back("set " + set_id + ": snapshot " + f.snap.id.substr(0, 16) + " in '" + f.repository + "' claims task " + tag("task") +
                      ", which another set has; left out");
      continue;
    }
    Bytes key;
    if (!from_hex(tag("agent-key"), key) || key.size() != 32) {
      notes.push_back("set " + set_id + ": snapshot " + f.snap.id.substr(0, 16) + " has a malformed agent-key tag; left out");
      continue;
    }
    catalog::CurveKey k{};
    std::copy(key.begin(), key.end(), k.begin());
    auto& agent_id = agent_ids[tag("agent-key")];
    if (agent_id.empty()) agent_id = tx.rebuilt_agent(tag("agent"), k);
    catalog::RebuiltTask t;
    t.id = tag("task");
    t.agent_id = agent_id;
    t.component = tag("component");
    t.repository = f.repository;
    t.snapshot_id = f.snap.id;
    // The cluster the snapshot is of: tagged by the agent since the logical
    // cluster (0014); an older etcd snapshot recorded etcd's own cluster id,
    // which was the cluster's name in the catalog then.
    t.cluster_id = tag("cluster");
    if (t.cluster_id.empty())
      if (auto id = driver_metadata::etcd_legacy_cluster_id(f.snap.component)) t.cluster_id = *id;
    for (const auto& tg : f.snap.tags)
      if (tg.rfind("member:", 0) == 0 && tg.size() > 7) t.members.push_back(tg.substr(7));
    t.created_at = f.snap.time_unix;
    t.state = f.snap.partial ? catalog::TaskState::partial : catalog::TaskState::succeeded;
    for (const auto& e : f.snap.errors) t.reasons.push_back(e.path + ": " + e.reason);
    if (f.snap.partial && t.reasons.empty()) t.reasons.push_back("the snapshot is marked partial");
    if (!f.snap.component.is_null()) t.component_metadata = f.snap.component.dump();
    if (f.snap.summary.contains("bytes_total") && f.snap.summary["bytes_total"].is_number_unsigned())
      t.bytes = f.snap.summary["bytes_total"].get<uint64_t>();
    partial |= f.snap.partial;
    if (f.tags.count("set-tasks")) expected = std::max<size_t>(expected, std::strtoull(tag("set-tasks").c_str(), nullptr, 10));
    if (f.tags.count("policy")) s.policy = tag("policy");
    s.created_at = std::min(s.created_at, f.snap.time_unix);
    s.finished_at = std::max(s.finished_at, f.snap.time_unix);
    s.tasks.push_back(std::move(t));
  }
  if (s.tasks.empty()) return std::nullopt;
  if (expected > s.tasks.size()) {
    s.state = catalog::SetState::partial;
    s.note = std::to_string(s.tasks.size()) + " of the set's " + std::to_string(expected) +
             " task(s) left a snapshot; the others failed or were lost";
  } else if (partial) {
    s.state = catalog::SetState::partial;
    s.note = "a snapshot is partial";
  } else if (expected == 0) {
    s.state = catalog::SetState::partial;
    s.note = "the snapshots do not say how many tasks the set had, so it cannot be called complete";
  }
  if (s.state == catalog::SetState::partial) notes.push_back("set " + set_id + " is partial: " + s.note);
  return s;
}

namespace {

std::string short_id(const std::string& id) { return id.substr(0, 16); }

// Where a record's task's snapshot is (nullptr: not there).
using FindSnapshot = std::function<const TaggedSnapshot*(const SetRecord::Task&)>;

// A set taken from its verified record: the tasks, agents and state it
// names, each task's snapshot found by `find`. Of `candidates` (the
// snapshots that claim the set), those `find` did not return are left out
// and reported.
std::optional<catalog::RebuiltSet> build_attested(catalog::Tx& tx, const SetRecord& rec, const FindSnapshot& find,
                                                  const std::vector<TaggedSnapshot>& candidates,
                                                  std::map<std::string, std::string>& agent_ids, RebuildReport& rep) {
  catalog::RebuiltSet s;
  s.id = rec.set_id;
  s.attested = true;
  s.created_at = rec.created_at;
  s.finished_at = rec.finished_at;
  s.state = catalog::parse_set_state(rec.state).value_or(catalog::SetState::partial);
  if (!rec.policy.empty()) s.policy = rec.policy;
  std::set<const TaggedSnapshot*> used;
  std::vector<std::string> lost;
  for (const auto& rt : rec.tasks) {
    if (rt.snapshot_id.empty()) continue;  // the task left no snapshot (failed): nothing to restore
    const TaggedSnapshot* f = find(rt);
    if (f) used.insert(f);
    if (!f) {
      lost.push_back("snapshot " + short_id(rt.snapshot_id) + " of task " + rt.id + " (agent '" + rt.agent_name + "', component '" +
                     rt.component + "') is not in repository '" + rt.repository + "'");
      continue;
    }
    Bytes key;
    if (!from_hex(rt.agent_key, key) || key.size() != 32) {
      lost.push_back("task " + rt.id + " names a malformed agent key");
      continue;
    }
    if (tx.task_exists(rt.id)) {
      lost.push_back("task " + rt.id + " is in another set already");
      continue;
    }
    catalog::CurveKey k{};
    std::copy(key.begin(), key.end(), k.begin());
    auto& agent_id = agent_ids[rt.agent_key];
    if (agent_id.empty()) agent_id = tx.rebuilt_agent(rt.agent_name, k);
    catalog::RebuiltTask t;
    t.id = rt.id;
    t.agent_id = agent_id;
    t.component = rt.component;
    t.repository = f->repository;
    t.snapshot_id = f->snap.id;
    t.cluster_id = rt.cluster_id;
    t.members = rt.members;
    t.created_at = f->snap.time_unix;
    t.state = catalog::parse_task_state(rt.state).value_or(catalog::TaskState::succeeded);
    for (const auto& e : f->snap.errors) t.reasons.push_back(e.path + ": " + e.reason);
    if (!f->snap.component.is_null()) t.component_metadata = f->snap.component.dump();
    if (f->snap.summary.contains("bytes_total") && f->snap.summary["bytes_total"].is_number_unsigned())
      t.bytes = f->snap.summary["bytes_total"].get<uint64_t>();
    s.tasks.push_back(std::move(t));
  }
  for (const auto& c : candidates)
    if (!used.count(&c)) {
      ++rep.snapshots_unlisted;
      rep.notes.push_back("set " + rec.set_id + ": snapshot " + short_id(c.snap.id) + " in '" + c.repository +
                          "' claims to be part of the set (task " + (c.tags.count("task") ? c.tags.at("task") : "?") + ", agent '" +
                          (c.tags.count("agent") ? c.tags.at("agent") : "?") +
                          "'), but the set's signed record does not list it: left out (the set's own run did not write it)");
    }
  if (s.tasks.empty()) {
    rep.notes.push_back("set " + rec.set_id + ": its signed record names no snapshot that is still there" +
                        (lost.empty() ? std::string() : ": " + lost.front()));
    return std::nullopt;
  }
  if (!lost.empty()) {
    s.state = catalog::SetState::partial;
    s.note = lost.front() + (lost.size() > 1 ? " (and " + std::to_string(lost.size() - 1) + " more)" : "");
    for (const auto& l : lost) rep.notes.push_back("set " + rec.set_id + " is partial: " + l);
  }
  return s;
}

}  // namespace

RebuildReport rebuild_catalog(const std::string& data_dir, const std::vector<RebuildSource>& repositories,
                              const std::vector<plan::PublicKey>& trusted) {
  if (repositories.empty()) throw Error(Errc::invalid_input, "name at least one repository (--repo)");
  DataDir dir = DataDir::take(data_dir);
  std::string path = data_dir + "/catalog.db";
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0)
    throw Error(Errc::exists,
                "a catalog exists at '" + path + "'; a rebuild never replaces one: move it away first if it is the one to replace");
  RebuildReport rep;
  std::map<std::string, plan::PublicKey> keys;
  for (const auto& k : trusted) keys[plan::key_id(k)] = k;
  auto trusted_key = [&](const std::string& id) -> const plan::PublicKey* {
    auto it = keys.find(id);
    return it == keys.end() ? nullptr : &it->second;
  };
  if (keys.empty())
    rep.notes.push_back(
        "no controller key was given (--trusted-key, or the key_dir of --config): no set record can be "
        "verified, so every set is unattested");
  std::map<std::string, std::vector<TaggedSnapshot>> sets;  // set id -> its snapshots
  std::map<std::string, SetRecord> records;                 // set id -> its latest verified record, from any repository
  for (const auto& r : repositories) {
    auto repo = open_source(r);
    std::vector<std::pair<std::string, std::string>> bad;
    for (auto& s : repo::load_snapshots(*repo, &bad)) {
      std::string why;
      auto t = tagged(std::move(s), r.name, why);
      if (t) {
        auto set = t->tags["set"];
        sets[set].push_back(std::move(*t));
      } else if (why.starts_with("safety")) {
        ++rep.skipped_safety;
      } else {
        ++rep.skipped_untagged;
        if (why.starts_with("snapshot ")) rep.notes.push_back(why);
      }
    }
    for (const auto& [id, why] : bad) {
      ++rep.skipped_unreadable;
      rep.notes.push_back("snapshot " + short_id(id) + " in '" + r.name + "' cannot be read: " + why);
    }
    for (const auto& name : repo->list(repo::FileType::set_record)) {
      std::string why;
      std::optional<SetRecord> rec;
      try {
        rec = verify_set_record(repo->load_json(repo::FileType::set_record, name), trusted_key, why);
      } catch (const std::exception& e) {
        why = e.what();
      }
      if (!rec) {
        if (!keys.empty()) {
          ++rep.records_unverified;
          rep.notes.push_back("set record " + short_id(name) + " in '" + r.name + "' is not trusted: " + why);
        }
        continue;
      }
      auto& best = records[rec->set_id];
      if (best.set_id.empty() || rec->signed_at > best.signed_at) best = std::move(*rec);
    }
  }
  for (const auto& [id, rec] : records)
    if (!sets.count(id)) sets[id];  // a set whose snapshots are all gone: reported by build_attested

  auto cat = catalog::Catalog::open(path);
  cat.transaction("operator:catalog-rebuild", [&](catalog::Tx& tx) {
    std::map<std::string, std::string> agent_ids;  // key hex -> id
    // Attested sets first: a forged snapshot reusing a genuine task's id is
    // then the one left out, whatever the ids' order.
    std::vector<std::string> order;
    for (const auto& [set_id, found] : sets)
      if (records.count(set_id)) order.push_back(set_id);
    for (const auto& [set_id, found] : sets)
      if (!records.count(set_id)) order.push_back(set_id);
    for (const auto& set_id : order) {
      const auto& found = sets[set_id];
      try {
        tx.savepoint([&] {
          std::optional<catalog::RebuiltSet> s;
          if (auto rec = records.find(set_id); rec != records.end()) {
            // A task's snapshot in the repository the record names, else a
            // copy it names (a policy's copy_to): the set comes back from the
            // copy, attested like the original.
            std::set<std::pair<std::string, std::string>> listed;  // (repository, snapshot id)
            for (const auto& rt : rec->second.tasks) {
              if (rt.snapshot_id.empty()) continue;
              listed.emplace(rt.repository, rt.snapshot_id);
              for (const auto& c : rt.copies) listed.insert(c);
            }
            auto find = [&](const SetRecord::Task& rt) -> const TaggedSnapshot* {
              for (const auto& c : found)
                if (c.snap.id == rt.snapshot_id && c.repository == rt.repository) return &c;
              for (const auto& [repository, snapshot] : rt.copies)
                for (const auto& c : found)
                  if (c.snap.id == snapshot && c.repository == repository) return &c;
              return nullptr;
            };
            // What claims the set and the record names at no place is left out.
            std::vector<TaggedSnapshot> unlisted;
            for (const auto& c : found)
              if (!listed.count({c.repository, c.snap.id})) unlisted.push_back(c);
            s = build_attested(tx, rec->second, find, unlisted, agent_ids, rep);
          } else {
            s = build_set(tx, set_id, found, agent_ids, rep.notes);
            if (s)
              rep.notes.push_back("set " + set_id +
                                  " is unattested: no set record signed by a trusted controller key "
                                  "covers it, so anyone holding the repository's password could have written its "
                                  "snapshots; it is restored only with --accept-unattested");
          }
          if (!s) return;
          s->requested_by = "catalog rebuild";
          tx.rebuilt_set(*s);
          if (s->state == catalog::SetState::complete) ++rep.sets_complete;
          if (s->attested) ++rep.sets_attested;
          ++rep.sets;
          rep.snapshots += s->tasks.size();
        });
      } catch (const std::exception& e) {
        rep.notes.push_back("set " + set_id + " is left out: " + e.what());
      }
    }
    rep.agents = agent_ids.size();
    tx.audit({"catalog.rebuild",
              "catalog",
              "ok",
              "",
              {{"sets", rep.sets},
               {"sets_attested", rep.sets_attested},
               {"snapshots", rep.snapshots},
               {"agents", rep.agents},
               {"records_unverified", rep.records_unverified},
               {"snapshots_unlisted", rep.snapshots_unlisted},
               {"skipped_safety", rep.skipped_safety},
               {"skipped_untagged", rep.skipped_untagged},
               {"skipped_unreadable", rep.skipped_unreadable}}});
  });
  return rep;
}

std::optional<SetRecord> verify_export_record(const std::string& record_text, const std::string& set_id,
                                              const std::vector<ExportedSnapshot>& exported, const TrustedKeys& trusted, std::string& why) {
  if (record_text.empty()) {
    why =
        "the export carries no set record signed by a controller (it was made by a cairnctl before 2026-11-28, or of a "
        "set that is unattested itself), so nothing shows that its snapshots are the set's own";
    return std::nullopt;
  }
  auto file = nlohmann::json::parse(record_text, nullptr, false);
  std::string bad;
  auto rec = verify_set_record(file, trusted, bad);
  if (!rec) {
    why = "the export's set record is not trusted: " + bad;
    return std::nullopt;
  }
  if (rec->set_id != set_id) {
    why = "the export's set record is backup set " + rec->set_id + "'s, not " + set_id + "'s, which the export names";
    return std::nullopt;
  }
  for (const auto& e : exported) {
    const SetRecord::Task* task = nullptr;
    for (const auto& rt : rec->tasks)
      if (rt.id == e.task_id) task = &rt;
    bool named = false;
    if (task)
      for (const auto& [repository, snapshot] : task->copies) named |= repository.starts_with(kExportCopyPrefix) && snapshot == e.export_id;
    if (!named) {
      why = "the export's snapshot " + short_id(e.export_id) + " (task " + e.task_id + ") is not the one the set's signed record names " +
            (task ? "for that task" : "(the record has no such task)") + ": it was not written by the export the controller signed";
      return std::nullopt;
    }
  }
  return rec;
}

std::string unattested_refusal(const std::string& why) {
  return why +
         "; nothing was recorded. Import it with --accept-unattested to record the set as unattested (restored only "
         "with --accept-unattested), after checking where the archive came from";
}

TrustedKeys controller_keys(const catalog::Tx& tx, const std::vector<plan::PublicKey>& extra,
                            std::map<std::string, plan::PublicKey>& storage) {
  for (const auto& k : extra) storage[plan::key_id(k)] = k;
  return [&tx, &storage](const std::string& id) -> const plan::PublicKey* {
    if (auto it = storage.find(id); it != storage.end()) return &it->second;
    auto k = tx.controller_key(id);
    if (!k || k->public_key.size() != 32) return nullptr;
    plan::PublicKey pub{};
    std::copy(k->public_key.begin(), k->public_key.end(), pub.begin());
    if (plan::key_id(pub) != id) return nullptr;
    return &(storage[id] = pub);
  };
}

ImportResult import_set(catalog::Catalog& cat, const RebuildSource& source, const std::vector<std::string>& snapshot_ids,
                        const std::string& actor, const std::string& origin, const ImportAttestation& att) {
  if (snapshot_ids.empty()) throw Error(Errc::invalid_input, "the import names no snapshot");
  if (att.export_ids.size() != snapshot_ids.size())
    throw Error(Errc::invalid_input, "the import does not name each snapshot's id in the export");
  auto repo = open_source(source);
  std::vector<TaggedSnapshot> found;
  std::string set_id;
  for (const auto& id : snapshot_ids) {
    if (!repo::is_snapshot_id(id)) throw Error(Errc::invalid_input, "'" + id + "' is not a snapshot id");
    repo::Snapshot s;
    try {
      s = repo::load_snapshot(*repo, id);
    } catch (const Error& e) {
      throw Error(e.code(), "snapshot " + id.substr(0, 16) + " in repository '" + source.name + "': " + e.what());
    }
    std::string why;
    auto t = tagged(std::move(s), source.name, why);
    if (!t) throw Error(Errc::invalid_input, "snapshot " + id.substr(0, 16) + " cannot be imported: " + why);
    if (set_id.empty()) set_id = t->tags["set"];
    if (t->tags["set"] != set_id)
      throw Error(Errc::invalid_input,
                  "the snapshots belong to two sets (" + set_id + ", " + t->tags["set"] + "); import one set at a time");
    found.push_back(std::move(*t));
  }
  std::vector<ExportedSnapshot> exported;
  for (size_t i = 0; i < found.size(); ++i) exported.push_back({att.export_ids[i], found[i].tags["task"]});
  ImportResult out;
  cat.transaction(actor, [&](catalog::Tx& tx) {
    if (tx.backup_set(set_id)) throw Error(Errc::exists, "backup set '" + set_id + "' is in the catalog already");
    std::map<std::string, plan::PublicKey> keys;
    std::string why;
    auto rec = verify_export_record(att.record_text, set_id, exported, controller_keys(tx, att.trusted, keys), why);
    std::map<std::string, std::string> agent_ids;
    std::optional<catalog::RebuiltSet> s;
    if (rec) {
      // From the record: each task's snapshot is the one imported from the
      // export snapshot the record names for it.
      auto find = [&](const SetRecord::Task& rt) -> const TaggedSnapshot* {
        for (size_t i = 0; i < found.size(); ++i)
          if (exported[i].task_id == rt.id)
            for (const auto& [repository, snapshot] : rt.copies)
              if (repository.starts_with(kExportCopyPrefix) && snapshot == exported[i].export_id) return &found[i];
        return nullptr;
      };
      RebuildReport rep;
      s = build_attested(tx, *rec, find, found, agent_ids, rep);
      out.notes = rep.notes;
      out.key_id = nlohmann::json::parse(att.record_text).value("key_id", "");
    } else {
      if (!att.accept_unattested) throw Error(Errc::denied, unattested_refusal(why));
      s = build_set(tx, set_id, found, agent_ids, out.notes);
      out.notes.push_back("set " + set_id + " is unattested: " + why);
    }
    if (!s)
      throw Error(Errc::invalid_input, "no snapshot of set " + set_id + " can be recorded: " +
                                           (out.notes.empty() ? std::string("none names a task") : out.notes.back()));
    s->requested_by = actor + " (import of " + origin + ")";
    tx.rebuilt_set(*s);
    if (!rec) tx.audit({"import.accept_unattested", "backup_set:" + set_id, "ok", "", {{"origin", origin}, {"why", why}}});
    out.set = std::move(*s);
  });
  return out;
}

}  // namespace cairn::controller
