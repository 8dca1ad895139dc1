// Catalog rebuild from snapshot tags (catalog_rebuild.h).
#include "controller/catalog_rebuild.h"

#include <sys/stat.h>

#include <map>

#include "common/repo/backend.h"
#include "common/repo/keys.h"
#include "common/repo/repository.h"
#include "common/repo/snapshot.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "controller/catalog/catalog.h"
#include "controller/data_dir.h"

namespace cairn::controller {
namespace {

std::map<std::string, std::string> tag_map(const repo::Snapshot& s) {
  std::map<std::string, std::string> out;
  for (const auto& t : s.tags) {
    auto colon = t.find(':');
    if (colon != std::string::npos) out.emplace(t.substr(0, colon), t.substr(colon + 1));
  }
  return out;
}

bool has(const repo::Snapshot& s, const std::string& tag) {
  return std::find(s.tags.begin(), s.tags.end(), tag) != s.tags.end();
}

struct Found {
  repo::Snapshot snap;
  std::string repository;
  std::map<std::string, std::string> tags;
};

}  // namespace

RebuildReport rebuild_catalog(const std::string& data_dir, const std::vector<RebuildSource>& repositories) {
  if (repositories.empty()) throw Error(Errc::invalid_input, "name at least one repository (--repo)");
  DataDir dir = DataDir::take(data_dir);
  std::string path = data_dir + "/catalog.db";
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0)
    throw Error(Errc::exists, "a catalog exists at '" + path +
                                  "'; a rebuild never replaces one: move it away first if it is the one to replace");
  RebuildReport rep;
  std::map<std::string, std::vector<Found>> sets;  // set id -> its snapshots
  for (const auto& r : repositories) {
    auto be = repo::make_fs_backend(r.path);
    if (!be->size({repo::FileType::config, ""})) throw Error(Errc::no_repo, "no repository at '" + r.path + "'");
    auto repo = repo::Repository::open(std::move(be), repo::Secret(repo::Secret::Kind::passphrase, read_secret_file(r.password_file)));
    std::vector<std::pair<std::string, std::string>> bad;
    for (auto& s : repo::load_snapshots(*repo, &bad)) {
      auto tags = tag_map(s);
      if (!has(s, "cairn") || !tags.count("set") || !tags.count("task") || !tags.count("component")) {
        ++rep.skipped_untagged;
        continue;
      }
      if (has(s, "safety")) {
        ++rep.skipped_safety;
        continue;
      }
      if (!tags.count("agent") || !tags.count("agent-key")) {
        ++rep.skipped_untagged;
        rep.notes.push_back("snapshot " + s.id.substr(0, 16) + " in '" + r.name + "' (set " + tags["set"] +
                            ") names no agent: written by an agent older than the agent tags; restore it with "
                            "'cairnctl repo restore'");
        continue;
      }
      sets[tags["set"]].push_back({std::move(s), r.name, std::move(tags)});
    }
    for (const auto& [id, why] : bad) {
      ++rep.skipped_unreadable;
      rep.notes.push_back("snapshot " + id.substr(0, 16) + " in '" + r.name + "' cannot be read: " + why);
    }
  }

  auto cat = catalog::Catalog::open(path);
  cat.transaction("operator:catalog-rebuild", [&](catalog::Tx& tx) {
    std::map<std::string, std::string> agent_ids;  // key hex -> id
    for (auto& [set_id, found] : sets) {
      catalog::RebuiltSet s;
      s.id = set_id;
      s.created_at = INT64_MAX;
      size_t expected = 0;
      bool partial = false;
      std::map<std::string, bool> seen_task;
      for (auto& f : found) {
        if (seen_task[f.tags["task"]]) continue;  // one task, one snapshot (a copy in a second repository)
        seen_task[f.tags["task"]] = true;
        Bytes key;
        if (!from_hex(f.tags["agent-key"], key) || key.size() != 32) {
          rep.notes.push_back("set " + set_id + ": snapshot " + f.snap.id.substr(0, 16) + " has a malformed agent-key tag; left out");
          continue;
        }
        catalog::CurveKey k{};
        std::copy(key.begin(), key.end(), k.begin());
        auto& agent_id = agent_ids[f.tags["agent-key"]];
        if (agent_id.empty()) agent_id = tx.rebuilt_agent(f.tags["agent"], k);
        catalog::RebuiltTask t;
        t.id = f.tags["task"];
        t.agent_id = agent_id;
        t.component = f.tags["component"];
        t.repository = f.repository;
        t.snapshot_id = f.snap.id;
        t.created_at = f.snap.time_unix;
        t.state = f.snap.partial ? catalog::TaskState::partial : catalog::TaskState::succeeded;
        for (const auto& e : f.snap.errors) t.reasons.push_back(e.path + ": " + e.reason);
        if (f.snap.partial && t.reasons.empty()) t.reasons.push_back("the snapshot is marked partial");
        if (!f.snap.component.is_null()) t.component_metadata = f.snap.component.dump();
        if (f.snap.summary.contains("bytes_total") && f.snap.summary["bytes_total"].is_number_unsigned())
          t.bytes = f.snap.summary["bytes_total"].get<uint64_t>();
        partial |= f.snap.partial;
        if (f.tags.count("set-tasks")) expected = std::max<size_t>(expected, std::strtoull(f.tags["set-tasks"].c_str(), nullptr, 10));
        if (f.tags.count("policy")) s.policy = f.tags["policy"];
        s.created_at = std::min(s.created_at, f.snap.time_unix);
        s.finished_at = std::max(s.finished_at, f.snap.time_unix);
        s.tasks.push_back(std::move(t));
      }
      if (s.tasks.empty()) continue;
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
      if (s.state == catalog::SetState::partial) rep.notes.push_back("set " + set_id + " is partial: " + s.note);
      else ++rep.sets_complete;
      tx.rebuilt_set(s);
      ++rep.sets;
      rep.snapshots += s.tasks.size();
    }
    rep.agents = agent_ids.size();
    tx.audit({"catalog.rebuild", "catalog", "ok", "",
              {{"sets", rep.sets}, {"snapshots", rep.snapshots}, {"agents", rep.agents},
               {"skipped_safety", rep.skipped_safety}, {"skipped_untagged", rep.skipped_untagged},
               {"skipped_unreadable", rep.skipped_unreadable}}});
  });
  return rep;
}

}  // namespace cairn::controller
