// Rows a catalog rebuilt from the repositories gets (controller/catalog_rebuild.h).
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "controller/catalog/sqlite.h"
#include "controller/catalog/tx.h"

namespace cairn::catalog {

std::string Tx::rebuilt_agent(const std::string& name, const CurveKey& key) {
  if (auto a = agent_by_key(key)) return a->id;
  // A name another key holds here (two hosts once called the same) gets the key's prefix.
  std::string use = name;
  if (agent(use)) use = name + "-" + to_hex(std::span<const uint8_t>(key)).substr(0, 8);
  std::string id = new_id("ag");
  db_.prepare(
         "INSERT INTO agents (id, name, curve_public_key, state, hostname, agent_version, created_at, state_changed_at)"
         " VALUES (?, ?, ?, 'pending', '', '', ?, ?)")
      .bind_all(id, use, std::span<const uint8_t>(key), now(), now())
      .run();
  audit({"agent.rebuilt", "agent:" + id, "pending", "", {{"name", use}}});
  return id;
}

void Tx::rebuilt_set(const RebuiltSet& s) {
  if (backup_set(s.id)) throw Error(Errc::exists, "backup set '" + s.id + "' is in the catalog already");
  db_.prepare(
         "INSERT INTO backup_sets (id, created_at, trigger, requested_by, selector, state, finished_at, policy, attested)"
         " VALUES (?, ?, ?, ?, '{}', ?, ?, ?, ?)")
      .bind_all(s.id, s.created_at, s.policy ? "schedule" : "manual", s.requested_by, std::string(to_string(s.state)), s.finished_at,
                s.policy, int64_t(s.attested ? 1 : 0))
      .run();
  auto ins_task = db_.prepare(
      "INSERT INTO tasks (id, backup_set_id, agent_id, component, kind, state, created_at, updated_at, snapshot_id,"
      " manifest_digest, repository, component_metadata, bytes_done, files_done, cluster_id)"
      " VALUES (?, ?, ?, ?, 'backup', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  auto ins_snap = db_.prepare(
      "INSERT INTO snapshots (id, task_id, backup_set_id, agent_id, component, manifest_digest, created_at, bytes, files)"
      " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
  auto ins_reason = db_.prepare("INSERT INTO task_reasons (task_id, ordinal, code, detail, item) VALUES (?, ?, ?, ?, '')");
  nlohmann::json tasks = nlohmann::json::array();
  for (const auto& t : s.tasks) {
    ins_task.reset();
    ins_task.bind_all(t.id, s.id, t.agent_id, t.component, std::string(to_string(t.state)), t.created_at, t.created_at, t.snapshot_id,
                      t.snapshot_id, t.repository, t.component_metadata, int64_t(t.bytes), int64_t(t.files), t.cluster_id);
    ins_task.run();
    set_task_cluster_members(t.id, t.members);
    ins_snap.reset();
    ins_snap.bind_all(t.snapshot_id, t.id, s.id, t.agent_id, t.component, t.snapshot_id, t.created_at, int64_t(t.bytes), int64_t(t.files));
    ins_snap.run();
    int ordinal = 0;
    for (const auto& why : t.reasons) {
      ins_reason.reset();
      ins_reason.bind_all(t.id, int64_t(ordinal++), int64_t(cairn::v1::ERROR_CODE_ITEM_SKIPPED), why).run();
    }
    tasks.push_back({{"task_id", t.id}, {"agent_id", t.agent_id}, {"component", t.component}, {"snapshot", t.snapshot_id}});
    if (!t.cluster_id.empty()) tasks.back()["cluster"] = t.cluster_id;
  }
  audit({"backup.rebuilt", "backup_set:" + s.id, std::string(to_string(s.state)), s.note, {{"tasks", tasks}, {"attested", s.attested}}});
}

}  // namespace cairn::catalog
