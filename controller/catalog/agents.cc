// Agents, operators and controller keys: who may connect and who signs.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <tuple>

#include "common/util/encoding.h"
#include "common/util/error.h"
#include "controller/catalog/sqlite.h"
#include "controller/catalog/tx.h"

namespace cairn::catalog {
namespace {

constexpr std::string_view kAgentStates[] = {"pending", "approved", "revoked"};

constexpr const char* kAgentColumns =
    "SELECT id, name, curve_public_key, state, hostname, agent_version, created_at, state_changed_at, last_seen_at,"
    " trusted_key_ids, labels"
    " FROM agents ";

Agent read_agent(const sqlite::Stmt& s) {
  Agent a;
  a.id = s.text(0);
  a.name = s.text(1);
  Bytes key = s.blob(2);
  if (key.size() == a.curve_public_key.size()) std::copy(key.begin(), key.end(), a.curve_public_key.begin());
  a.state = parse_agent_state(s.text(3)).value_or(AgentState::revoked);
  a.hostname = s.text(4);
  a.agent_version = s.text(5);
  a.created_at = s.integer(6);
  a.state_changed_at = s.integer(7);
  if (!s.is_null(8)) a.last_seen_at = s.integer(8);
  auto ids = nlohmann::json::parse(s.text(9), nullptr, false);
  if (ids.is_array())
    for (const auto& k : ids)
      if (k.is_string()) a.trusted_key_ids.push_back(k.get<std::string>());
  auto labels = nlohmann::json::parse(s.text(10), nullptr, false);
  if (labels.is_object())
    for (const auto& [k, v] : labels.items())
      if (v.is_string()) a.labels[k] = v.get<std::string>();
  return a;
}

}  // namespace

std::string_view to_string(AgentState s) { return kAgentStates[size_t(s)]; }

std::optional<AgentState> parse_agent_state(std::string_view s) {
  for (size_t i = 0; i < std::size(kAgentStates); ++i)
    if (kAgentStates[i] == s) return AgentState(i);
  return std::nullopt;
}

std::string Tx::enrol_agent(const std::string& name, const CurveKey& key, const std::string& hostname, const std::string& agent_version) {
  if (name.empty()) throw Error(Errc::invalid_input, "an agent needs a name");
  if (agent(name)) throw Error(Errc::exists, "an agent named '" + name + "' is already enrolled");
  if (agent_by_key(key)) throw Error(Errc::exists, "the key of agent '" + name + "' belongs to another agent");
  std::string id = new_id("ag");
  db_.prepare(
         "INSERT INTO agents (id, name, curve_public_key, state, hostname, agent_version, created_at,"
         " state_changed_at, last_seen_at) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?)")
      .bind_all(id, name, std::span<const uint8_t>(key), hostname, agent_version, now(), now(), now())
      .run();
  audit({"agent.enrol", "agent:" + id, "pending", "", {{"name", name}, {"hostname", hostname}, {"curve_public_key", to_hex(key)}}});
  return id;
}

std::vector<std::string> Tx::drop_oldest_pending_agents(size_t keep) {
  // Asked at every unknown key: answered from the index unless the list is
  // over its bound (the search below reads every pending agent).
  auto over = db_.prepare("SELECT 1 FROM agents WHERE state = 'pending' LIMIT 1 OFFSET ?");
  if (!over.bind(1, int64_t(keep)).step()) return {};
  // Only agents nothing refers to yet: a pending agent never had a plan or a
  // task, but a row that did is never deleted from under its history.
  auto rows = db_.prepare(
      "SELECT id, name, hex(curve_public_key) FROM agents a WHERE state = 'pending'"
      " AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.agent_id = a.id)"
      " AND NOT EXISTS (SELECT 1 FROM plans p WHERE p.agent_id = a.id)"
      " AND NOT EXISTS (SELECT 1 FROM plan_sequences q WHERE q.agent_id = a.id)"
      " ORDER BY created_at DESC, rowid DESC LIMIT -1 OFFSET ?");
  rows.bind(1, int64_t(keep));
  std::vector<std::string> ids;
  nlohmann::json dropped = nlohmann::json::array();
  while (rows.step()) {
    ids.push_back(rows.text(0));
    if (dropped.size() < 16) dropped.push_back({{"id", rows.text(0)}, {"name", rows.text(1)}, {"curve_public_key", rows.text(2)}});
  }
  if (ids.empty()) return ids;
  auto del = db_.prepare("DELETE FROM agents WHERE id = ?");
  for (const auto& id : ids) {
    del.bind(1, id).run();
    del.reset();
  }
  audit({"agent.pending_dropped", "agents", "dropped", "pending list full", {{"count", ids.size()}, {"keep", keep}, {"agents", dropped}}});
  return ids;
}

void Tx::set_agent_state(const std::string& agent_id, AgentState to) {
  auto a = agent(agent_id);
  if (!a) throw Error(Errc::not_found, "no agent '" + agent_id + "'");
  // Approving an agent approves the cluster memberships it declares (shown
  // by 'agent list' as pending); approving it again approves those it
  // declared since.
  if (to == AgentState::approved && a->state != AgentState::revoked) approve_memberships(a->id);
  if (a->state == to) return;
  // Revocation is final: a revoked key is re-enrolled as a new agent, so the
  // audit trail never shows a key silently coming back.
  if (a->state == AgentState::revoked)
    throw Error(Errc::invalid_input, "agent '" + a->name + "' is revoked; enrol it again with a new key");
  db_.prepare("UPDATE agents SET state = ?, state_changed_at = ? WHERE id = ?").bind_all(to_string(to), now(), a->id).run();
  if (to == AgentState::revoked) {
    // Revocation releases the name (a host rebuilt under a new key takes it
    // and restores what this one backed up: predecessors()); the revoked
    // record keeps its id and history under a name of its own.
    std::string kept = a->name + ".revoked-" + a->id.substr(a->id.find('-') + 1, 8);
    for (int i = 2; agent(kept); ++i) kept = a->name + ".revoked-" + a->id.substr(a->id.find('-') + 1, 8) + "-" + std::to_string(i);
    db_.prepare("UPDATE agents SET name = ? WHERE id = ?").bind_all(kept, a->id).run();
    db_.prepare("INSERT OR REPLACE INTO released_agent_names (agent_id, name, released_at) VALUES (?, ?, ?)")
        .bind_all(a->id, a->name, now())
        .run();
    audit({"agent.name_released", "agent:" + a->id, "ok", "", {{"name", a->name}, {"now", kept}}});
  }
  std::string action = to == AgentState::approved ? "agent.approve" : to == AgentState::revoked ? "agent.revoke" : "agent.pend";
  audit({action, "agent:" + a->id, std::string(to_string(to)), "", {{"name", a->name}, {"from", to_string(a->state)}}});
}

void Tx::set_agent_labels(const std::string& agent_id, const std::map<std::string, std::string>& labels) {
  auto a = agent(agent_id);
  if (!a || a->labels == labels) return;
  nlohmann::json j = labels;
  db_.prepare("UPDATE agents SET labels = ? WHERE id = ?").bind_all(j.dump(), agent_id).run();
  audit({"agent.labels", "agent:" + agent_id, "ok", "", {{"labels", j}}});
}

void Tx::touch_agent(const std::string& agent_id) {
  db_.prepare("UPDATE agents SET last_seen_at = ? WHERE id = ?").bind_all(now(), agent_id).run();
}

// The logical cluster a new member joins: the cluster its own backups of
// the component recorded (a rebuilt or imported catalog: the snapshots' tag
// cluster:<id>); else the cluster whose newest backup names this agent as a
// member; else the cluster of a member already known by that name or
// declaring the same id; else a new cluster named by the declared id.
std::string Tx::cluster_to_join(const std::string& agent_id, const Component& c) {
  {
    auto s = db_.prepare(
        "SELECT cluster_id FROM tasks WHERE agent_id = ? AND component = ? AND cluster_id != '' AND kind = 'backup'"
        " ORDER BY created_at DESC LIMIT 1");
    s.bind_all(agent_id, c.name);
    if (s.step()) {
      std::string cluster = s.text(0);
      // Members that came back first after a rebuild, declaring the same id,
      // founded a cluster of their own that has no backup yet: it is this one.
      std::vector<std::pair<std::string, std::string>> moved;  // agent, component
      auto q = db_.prepare(
          "SELECT agent_id, component FROM cluster_members m WHERE driver = ?1 AND declared_cluster_id = ?2 AND cluster != ?3"
          " AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.cluster_id = m.cluster AND t.kind = 'backup')");
      q.bind_all(c.driver, c.cluster_id, cluster);
      while (q.step()) moved.emplace_back(q.text(0), q.text(1));
      for (const auto& [agent, component] : moved) {
        db_.prepare("UPDATE cluster_members SET cluster = ? WHERE agent_id = ? AND component = ?")
            .bind_all(cluster, agent, component)
            .run();
        audit({"cluster.member.merge",
               "agent:" + agent,
               "ok",
               "",
               {{"component", component},
                {"cluster", cluster},
                {"declared", c.cluster_id},
                {"why", "the cluster its backups recorded, named by a member that came back with them"}}});
      }
      return cluster;
    }
  }
  // The cluster whose newest backup named this agent as a member (a host
  // rebuilt under its old name, a catalog rebuilt from the repository).
  if (auto a = agent(agent_id))
    if (auto named = cluster_naming_member(c.name, a->name)) return *named;
  {
    auto s = db_.prepare(
        "SELECT cluster FROM cluster_members WHERE driver = ?1 AND (cluster = ?2 OR declared_cluster_id = ?2)"
        " ORDER BY state = 'approved' DESC, created_at LIMIT 1");
    s.bind_all(c.driver, c.cluster_id);
    if (s.step()) return s.text(0);
  }
  return c.cluster_id;
}

// Replaces what the agent declared as its cluster by the logical cluster its
// membership names (creating the membership when it is new) and says whether
// the membership waits for an operator (docs/protocol.md § Cluster identity).
void Tx::resolve_memberships(const std::string& agent_id, std::vector<Component>& components) {
  auto a = agent(agent_id);
  const bool agent_approved = a && a->state == AgentState::approved;
  // An agent registers only once approved (ZAP refuses a pending key), so the
  // operator's approval of a new agent is the approval of the configuration
  // it comes with: memberships it declares at its first registration are
  // approved with it. Declared later (a changed configuration), a membership
  // of a cluster that has approved members waits for an operator.
  const bool first_registration = agent_components(agent_id).empty();
  for (auto& c : components) {
    if (c.scope != "cluster") continue;
    const std::string declared = c.cluster_id;
    c.declared_cluster_id = declared;
    std::optional<std::tuple<std::string, std::string, std::string, std::string>> m;  // driver, cluster, state, declared
    {
      auto s = db_.prepare("SELECT driver, cluster, state, declared_cluster_id FROM cluster_members WHERE agent_id = ? AND component = ?");
      s.bind_all(agent_id, c.name);
      if (s.step()) m = std::make_tuple(s.text(0), s.text(1), s.text(2), s.text(3));
    }
    if (m && std::get<0>(*m) != c.driver) {
      db_.prepare("DELETE FROM cluster_members WHERE agent_id = ? AND component = ?").bind_all(agent_id, c.name).run();
      m.reset();
    }
    if (m) {
      if (std::get<3>(*m) != declared) {
        // etcd's own cluster id changes with every restore (a new cluster is
        // made): the logical cluster stays; the change is kept and audited.
        db_.prepare("UPDATE cluster_members SET declared_cluster_id = ? WHERE agent_id = ? AND component = ?")
            .bind_all(declared, agent_id, c.name)
            .run();
        audit({"cluster.member.declared",
               "agent:" + agent_id,
               "ok",
               "",
               {{"component", c.name}, {"cluster", std::get<1>(*m)}, {"from", std::get<3>(*m)}, {"to", declared}}});
      }
      c.cluster_id = std::get<1>(*m);
      c.member_pending = std::get<2>(*m) != "approved";
      continue;
    }
    // A member that cannot name its cluster (an empty host: nothing runs,
    // no data dir) joins the cluster whose newest backup names this agent
    // as a member; none does: it is no member of anything yet.
    std::string cluster;
    if (declared.empty()) {
      auto named = a ? cluster_naming_member(c.name, a->name) : std::nullopt;
      if (!named) {
        c.cluster_id.clear();
        continue;
      }
      cluster = *named;
    } else {
      cluster = cluster_to_join(agent_id, c);
    }
    bool has_members = false;
    {
      auto s = db_.prepare("SELECT 1 FROM cluster_members WHERE driver = ? AND cluster = ? AND state = 'approved' LIMIT 1");
      s.bind_all(c.driver, cluster);
      has_members = s.step();
    }
    // An agent not yet approved proposes; the operator's approval of the agent
    // approves it. An approved agent founding a new cluster is its first
    // member; joining one that has members needs an operator.
    const bool approved_now = agent_approved && (first_registration || !has_members);
    db_.prepare(
           "INSERT INTO cluster_members (agent_id, component, driver, cluster, state, declared_cluster_id, created_at)"
           " VALUES (?, ?, ?, ?, ?, ?, ?)")
        .bind_all(agent_id, c.name, c.driver, cluster, approved_now ? "approved" : "pending", declared, now())
        .run();
    audit({approved_now ? "cluster.member.approve" : "cluster.member.propose",
           "agent:" + agent_id,
           approved_now ? "approved" : "pending",
           "",
           {{"component", c.name},
            {"driver", c.driver},
            {"cluster", cluster},
            {"declared", declared},
            {"by", !approved_now  ? (agent_approved ? "waits for an operator" : "waits for the agent's approval")
                   : !has_members ? "first member of a new cluster"
                                  : "declared at the agent's first registration after its approval"}}});
    c.cluster_id = cluster;
    c.member_pending = !approved_now;
  }
}

size_t Tx::approve_memberships(const std::string& agent_id) {
  std::vector<std::pair<std::string, std::string>> pending;  // component, cluster
  {
    auto s = db_.prepare("SELECT component, cluster FROM cluster_members WHERE agent_id = ? AND state = 'pending'");
    s.bind(1, agent_id);
    while (s.step()) pending.emplace_back(s.text(0), s.text(1));
  }
  for (const auto& [component, cluster] : pending) {
    db_.prepare("UPDATE cluster_members SET state = 'approved' WHERE agent_id = ? AND component = ?").bind_all(agent_id, component).run();
    audit({"cluster.member.approve",
           "agent:" + agent_id,
           "approved",
           "",
           {{"component", component}, {"cluster", cluster}, {"by", "operator"}}});
  }
  return pending.size();
}

void Tx::set_task_cluster_members(const std::string& task_id, const std::vector<std::string>& names) {
  auto ins = db_.prepare("INSERT OR IGNORE INTO task_cluster_members (task_id, agent_name) VALUES (?, ?)");
  for (const auto& n : names) {
    ins.reset();
    ins.bind_all(task_id, n).run();
  }
}

std::vector<std::string> Tx::task_cluster_members(const std::string& task_id) const {
  auto s = db_.prepare("SELECT agent_name FROM task_cluster_members WHERE task_id = ? ORDER BY agent_name");
  s.bind(1, task_id);
  std::vector<std::string> out;
  while (s.step()) out.push_back(s.text(0));
  return out;
}

std::vector<std::string> Tx::cluster_member_names(const std::string& driver, const std::string& cluster) const {
  auto s = db_.prepare(
      "SELECT a.name FROM cluster_members m JOIN agents a ON a.id = m.agent_id"
      " WHERE m.driver = ? AND m.cluster = ? AND m.state = 'approved' AND a.state = 'approved' ORDER BY a.name");
  s.bind_all(driver, cluster);
  std::vector<std::string> out;
  while (s.step()) out.push_back(s.text(0));
  return out;
}

std::optional<std::string> Tx::cluster_naming_member(const std::string& component, const std::string& agent_name) const {
  auto s = db_.prepare(
      "SELECT t.cluster_id FROM task_cluster_members m JOIN tasks t ON t.id = m.task_id"
      " WHERE m.agent_name = ? AND t.component = ? AND t.kind = 'backup' AND t.cluster_id != ''"
      " ORDER BY t.created_at DESC, t.rowid DESC LIMIT 1");
  s.bind_all(agent_name, component);
  if (!s.step()) return std::nullopt;
  return s.text(0);
}

std::vector<std::string> Tx::predecessors(const std::string& agent_id) const {
  auto s = db_.prepare(
      "SELECT r.agent_id FROM released_agent_names r JOIN agents a ON a.name = r.name"
      " WHERE a.id = ? AND r.agent_id != a.id ORDER BY r.released_at, r.rowid");
  s.bind(1, agent_id);
  std::vector<std::string> out;
  while (s.step()) out.push_back(s.text(0));
  return out;
}

bool Tx::name_released(const std::string& name) const {
  if (agent(name)) return false;
  auto s = db_.prepare("SELECT 1 FROM released_agent_names WHERE name = ? LIMIT 1");
  s.bind(1, name);
  return s.step();
}

void Tx::set_agent_components(const std::string& agent_id, const std::vector<Component>& components) {
  auto sorted = components;
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  resolve_memberships(agent_id, sorted);
  if (agent_components(agent_id) == sorted) return;
  db_.prepare("DELETE FROM agent_components WHERE agent_id = ?").bind(1, agent_id).run();
  auto ins = db_.prepare(
      "INSERT INTO agent_components (agent_id, name, driver, can_restore, restore_targets, scope, cluster_id, member_id,"
      " modes, restore_stops_service, repository, has_drill) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  nlohmann::json list = nlohmann::json::array();
  for (const auto& c : sorted) {
    ins.reset();
    nlohmann::json targets = c.restore_targets;
    nlohmann::json modes = c.modes;
    // What the agent declares; the logical cluster is its membership's (read
    // through cluster_members, so merging clusters rewrites no component).
    const std::string& stored = c.scope == "cluster" && !c.declared_cluster_id.empty() ? c.declared_cluster_id : c.cluster_id;
    ins.bind_all(agent_id, c.name, c.driver, int64_t(c.can_restore), targets.dump(), c.scope, stored, c.member_id, modes.dump(),
                 int64_t(c.restore_stops_service), c.repository, int64_t(c.has_drill))
        .run();
    nlohmann::json entry = {{"name", c.name}, {"driver", c.driver}, {"can_restore", c.can_restore}, {"restore_targets", targets}};
    if (!c.repository.empty()) entry["repository"] = c.repository;
    if (c.scope != "node") {
      entry["scope"] = c.scope;
      entry["cluster_id"] = c.cluster_id;
      entry["member_id"] = c.member_id;
    }
    list.push_back(std::move(entry));
  }
  audit({"agent.components", "agent:" + agent_id, "ok", "", {{"components", list}}});
}

std::optional<Agent> Tx::agent(const std::string& id_or_name) const {
  // By id, then by name: two primary-key/unique lookups are cheaper than one
  // "id = ? OR name = ?" (a multi-index OR), and this is read once per plan.
  for (const char* where : {"WHERE id = ?", "WHERE name = ?"}) {
    auto s = db_.prepare(std::string(kAgentColumns) + where);
    s.bind(1, id_or_name);
    if (s.step()) return read_agent(s);
  }
  return std::nullopt;
}

std::optional<Agent> Tx::agent_by_key(const CurveKey& key) const {
  auto s = db_.prepare(std::string(kAgentColumns) + "WHERE curve_public_key = ?");
  s.bind(1, std::span<const uint8_t>(key));
  if (!s.step()) return std::nullopt;
  return read_agent(s);
}

std::vector<Agent> Tx::agents() const {
  auto s = db_.prepare(std::string(kAgentColumns) + "ORDER BY name");
  std::vector<Agent> out;
  while (s.step()) out.push_back(read_agent(s));
  return out;
}

std::vector<Component> Tx::agent_components(const std::string& agent_id) const {
  auto s = db_.prepare(
      "SELECT c.name, c.driver, c.can_restore, c.restore_targets, c.scope,"
      " CASE WHEN c.scope = 'cluster' AND m.cluster IS NOT NULL THEN m.cluster ELSE c.cluster_id END, c.member_id, c.modes,"
      " c.restore_stops_service, c.repository, m.state, m.declared_cluster_id, c.has_drill FROM agent_components c"
      " LEFT JOIN cluster_members m ON m.agent_id = c.agent_id AND m.component = c.name"
      " WHERE c.agent_id = ? ORDER BY c.name");
  s.bind(1, agent_id);
  std::vector<Component> out;
  while (s.step()) {
    Component c;
    c.name = s.text(0);
    c.driver = s.text(1);
    c.can_restore = s.integer(2) != 0;
    // Written by set_agent_components; anything else reads as no target.
    auto targets = nlohmann::json::parse(s.text(3), nullptr, false);
    if (targets.is_array())
      for (const auto& t : targets)
        if (t.is_string()) c.restore_targets.push_back(t.get<std::string>());
    c.scope = s.text(4);
    c.cluster_id = s.text(5);
    c.member_id = s.text(6);
    auto modes = nlohmann::json::parse(s.text(7), nullptr, false);
    if (modes.is_array())
      for (const auto& m : modes)
        if (m.is_string()) c.modes.push_back(m.get<std::string>());
    c.restore_stops_service = s.integer(8) != 0;
    c.repository = s.text(9);
    c.has_drill = s.integer(12) != 0;
    if (c.scope == "cluster" && !s.is_null(10)) {
      c.member_pending = s.text(10) != "approved";
      c.declared_cluster_id = s.text(11);
    }
    out.push_back(std::move(c));
  }
  return out;
}

std::string Tx::add_operator(const std::string& name, const CurveKey& key) {
  std::string id = new_id("op");
  db_.prepare("INSERT INTO operators (id, name, curve_public_key, state, created_at) VALUES (?, ?, ?, 'active', ?)")
      .bind_all(id, name, std::span<const uint8_t>(key), now())
      .run();
  audit({"operator.add", "operator:" + name, "active", "", {{"curve_public_key", to_hex(key)}}});
  return id;
}

void Tx::revoke_operator(const std::string& name) {
  auto s = db_.prepare("UPDATE operators SET state = 'revoked' WHERE name = ? AND state = 'active'");
  s.bind(1, name).run();
  if (db_.changes() == 0) throw Error(Errc::not_found, "no active operator '" + name + "'");
  audit({"operator.revoke", "operator:" + name, "revoked", "", {}});
}

bool Tx::is_active_operator(const CurveKey& key) const {
  auto s = db_.prepare("SELECT 1 FROM operators WHERE curve_public_key = ? AND state = 'active'");
  s.bind(1, std::span<const uint8_t>(key));
  return s.step();
}

void Tx::add_controller_key(const std::string& key_id, std::span<const uint8_t> public_key, bool active) {
  if (active) {
    db_.prepare("UPDATE controller_keys SET state = 'standby' WHERE state = 'active'").run();
  }
  db_.prepare("INSERT INTO controller_keys (key_id, public_key, state, created_at) VALUES (?, ?, ?, ?)")
      .bind_all(key_id, public_key, std::string(active ? "active" : "standby"), now())
      .run();
  audit({"controller_key.add", "key:" + key_id, active ? "active" : "standby", "", {{"public_key", to_hex(public_key)}}});
}

void Tx::retire_controller_key(const std::string& key_id) {
  db_.prepare("UPDATE controller_keys SET state = 'retired', retired_at = ? WHERE key_id = ? AND state <> 'retired'")
      .bind_all(now(), key_id)
      .run();
  if (db_.changes() == 0) throw Error(Errc::not_found, "no controller key '" + key_id + "' to retire");
  audit({"controller_key.retire", "key:" + key_id, "retired", "", {}});
}

std::optional<std::string> Tx::active_controller_key() const {
  auto s = db_.prepare("SELECT key_id FROM controller_keys WHERE state = 'active'");
  if (!s.step()) return std::nullopt;
  return s.text(0);
}

std::optional<ControllerKeyRecord> Tx::controller_key(const std::string& key_id) const {
  auto s = db_.prepare("SELECT key_id, public_key, state, created_at FROM controller_keys WHERE key_id = ?");
  s.bind(1, key_id);
  if (!s.step()) return std::nullopt;
  return ControllerKeyRecord{s.text(0), s.blob(1), s.text(2), s.integer(3)};
}

std::optional<std::string> Tx::standby_controller_key() const {
  auto s = db_.prepare("SELECT key_id FROM controller_keys WHERE state = 'standby' ORDER BY created_at, rowid LIMIT 1");
  if (!s.step()) return std::nullopt;
  return s.text(0);
}

void Tx::activate_controller_key(const std::string& key_id) {
  auto k = controller_key(key_id);
  if (!k) throw Error(Errc::not_found, "no controller key '" + key_id + "'");
  if (k->state == "active") return;
  if (k->state == "retired") throw Error(Errc::invalid_input, "controller key '" + key_id + "' is retired");
  if (auto old = active_controller_key()) retire_controller_key(*old);
  db_.prepare("UPDATE controller_keys SET state = 'active' WHERE key_id = ?").bind(1, key_id).run();
  audit({"controller_key.activate", "key:" + key_id, "active", "", {}});
}

void Tx::add_key_announcement(const KeyAnnouncementRecord& a) {
  db_.prepare(
         "INSERT INTO key_announcements (id, new_key_id, signed_by, retires, issued_at, expires_at, envelope)"
         " VALUES (?, ?, ?, ?, ?, ?, ?)")
      .bind_all(a.id, a.new_key_id, a.signed_by, nlohmann::json(a.retires).dump(), a.issued_at, a.expires_at,
                std::span<const uint8_t>(a.envelope))
      .run();
  audit({"controller_key.announce",
         "key:" + a.new_key_id,
         "announced",
         "",
         {{"announcement_id", a.id}, {"signed_by", a.signed_by}, {"retires", a.retires}, {"expires_at", a.expires_at}}});
}

std::vector<KeyAnnouncementRecord> Tx::key_announcements() const {
  auto s = db_.prepare(
      "SELECT id, new_key_id, signed_by, retires, issued_at, expires_at, envelope FROM key_announcements"
      " ORDER BY rowid");  // the order they were made, whatever the wall clock did
  std::vector<KeyAnnouncementRecord> out;
  while (s.step()) {
    KeyAnnouncementRecord a{s.text(0), s.text(1), s.text(2), {}, s.integer(4), s.integer(5), s.blob(6)};
    auto r = nlohmann::json::parse(s.text(3), nullptr, false);
    if (r.is_array())
      for (const auto& k : r)
        if (k.is_string()) a.retires.push_back(k.get<std::string>());
    out.push_back(std::move(a));
  }
  return out;
}

void Tx::set_agent_trusted_keys(const std::string& agent_id, const std::vector<std::string>& key_ids) {
  auto a = agent(agent_id);
  if (!a) throw Error(Errc::not_found, "no agent '" + agent_id + "'");
  std::vector<std::string> sorted = key_ids;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  if (sorted == a->trusted_key_ids) return;
  db_.prepare("UPDATE agents SET trusted_key_ids = ? WHERE id = ?").bind_all(nlohmann::json(sorted).dump(), agent_id).run();
  audit({"agent.trusted_keys", "agent:" + agent_id, "ok", "", {{"from", a->trusted_key_ids}, {"to", sorted}}});
}

}  // namespace cairn::catalog
