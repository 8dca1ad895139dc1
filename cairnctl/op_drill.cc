// cairnctl drill run SET|--latest [--component C] [--node N] [--on AGENT] [--wait], drill show ID, drill list
// (docs/drills.md).
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "cairnctl/op_client.h"
#include "cairnctl/op_commands.h"
#include "cairnctl/op_view.h"
#include "common/util/terminal_text.h"

namespace cairn::ctl {
// Named, not anonymous: the sanitizer build is a unity build (op_backup.cc has its own show()).
namespace drill_cmd {

cairn::v1::RestoreInfo show_drill(const OpOptions& o, const std::string& id) {
  cairn::v1::OperatorRequest q;
  q.mutable_restore_show()->set_restore_id(id);
  auto r = op_call(o, q).restore();
  if (r.kind() != "drill") throw Error(Errc::invalid_input, "'" + id + "' is a restore, not a drill: 'cairnctl restore show'");
  return r;
}

std::string value_text(const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// A drill's outcome in words: a drill that could not run proves nothing
// about the backup, and says so.
std::string outcome_text(const cairn::v1::RestoreInfo& r) {
  if (r.state() == cairn::v1::SET_STATE_COMPLETE) return "proven restorable";
  if (r.verdict() == "not_run") return "could not run (proves nothing about the backup; see the reasons)";
  if (r.verdict() == "failed") return "FAILED: a backup did not restore or check out";
  return set_state_name(r.state());
}

void print_drill(const cairn::v1::RestoreInfo& r) {
  std::printf("drill %s of backup set %s: %s\n", terminal_safe(r.restore_id()).c_str(), terminal_safe(r.backup_set_id()).c_str(),
              outcome_text(r).c_str());
  for (const auto& o : r.order()) std::printf("%s\n", terminal_safe(o).c_str());
  print_tasks(r.tasks());
  for (const auto& t : r.tasks()) {
    auto m = nlohmann::json::parse(t.component_metadata(), nullptr, false);
    if (!m.is_object() || !m.contains("drill")) continue;
    const auto& d = m["drill"];
    std::printf("%s (%s):\n", terminal_safe(t.component()).c_str(), terminal_safe(d.value("driver", "")).c_str());
    std::string phases;
    const nlohmann::json phase_list = d.contains("phases") && d["phases"].is_object() ? d["phases"] : nlohmann::json::object();
    for (const auto& [name, secs] : phase_list.items()) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%s %.1f s", name.c_str(), secs.is_number() ? secs.get<double>() : 0.0);
      phases += (phases.empty() ? "" : ", ") + std::string(buf);
    }
    if (!phases.empty()) std::printf("  phases: %s\n", phases.c_str());
    const nlohmann::json checks = d.contains("checks") && d["checks"].is_array() ? d["checks"] : nlohmann::json::array();
    for (const auto& c : checks) {
      if (!c.is_object()) continue;
      std::printf("  %-4s %s: expected %s, found %s\n", c.value("ok", false) ? "ok" : "FAIL", terminal_safe(c.value("name", "")).c_str(),
                  terminal_safe(value_text(c.contains("expected") ? c["expected"] : nlohmann::json())).c_str(),
                  terminal_safe(value_text(c.contains("found") ? c["found"] : nlohmann::json())).c_str());
    }
  }
}

int watch_drill(const OpOptions& o, const std::string& id, const std::atomic<bool>& cancel) {
  int rc = wait_for(
      o,
      [&] {
        auto s = show_drill(o, id);
        return WaitView{"drill " + id, s.state(), s.tasks()};
      },
      cancel);
  auto r = show_drill(o, id);
  if (o.json)
    std::printf("%s\n", proto_json(r).c_str());
  else
    print_drill(r);
  return rc;
}

}  // namespace drill_cmd

void register_op_drill(CLI::App& app, Context& ctx) {
  using namespace drill_cmd;
  auto* drill = app.add_subcommand("drill", "prove backups restore: restore into a sandbox, start, check (docs/drills.md)");
  drill->require_subcommand(1);

  auto* run = drill->add_subcommand("run", "drill a backup set's snapshots on a drill agent");
  auto o = std::make_shared<OpOptions>();
  auto set = std::make_shared<std::string>();
  auto latest = std::make_shared<bool>(false);
  auto components = std::make_shared<std::vector<std::string>>();
  auto nodes = std::make_shared<std::vector<std::string>>();
  auto on = std::make_shared<std::string>();
  auto wait = std::make_shared<bool>(false);
  auto accept_unattested = std::make_shared<bool>(false);
  run->add_option("set", *set, "backup set id (or a unique prefix)");
  run->add_flag("--latest", *latest, "the newest complete or partial set holding the selected component(s)");
  run->add_option("--component", *components, "component name (repeatable; default: every one in the set)");
  run->add_option("--node", *nodes, "only the snapshots these agents wrote (repeatable)");
  run->add_option("--on", *on, "the drill agent (default: a connected agent with a [drill] section)");
  run->add_flag("--wait", *wait, "follow the drill until it ends; exit 0 proven, 1 failed or could not run");
  run->add_flag("--accept-unattested", *accept_unattested,
                "drill a set no signed set record covers (rebuilt from snapshot tags, imported unattested)");
  add_op_options(run, *o);
  run->callback([&ctx, o, set, latest, components, nodes, on, wait, accept_unattested] {
    if (set->empty() == !*latest) throw CLI::ValidationError("drill run", "name a backup set or --latest (not both)");
    ctx.action = [&ctx, o, set, latest, components, nodes, on, wait, accept_unattested]() -> int {
      cairn::v1::OperatorRequest q;
      auto* d = q.mutable_drill();
      d->set_backup_set_id(*set);
      d->set_latest(*latest);
      d->set_on_agent(*on);
      d->set_accept_unattested(*accept_unattested);
      for (const auto& c : *components) d->mutable_selector()->add_components(c);
      for (const auto& n : *nodes) d->mutable_selector()->add_nodes(n);
      auto info = op_call(*o, q).restore();
      if (o->json && !*wait) {
        std::printf("%s\n", proto_json(info).c_str());
        return kExitOk;
      }
      if (!o->json)
        std::printf("drill %s of backup set %s created with %d task(s)\n", terminal_safe(info.restore_id()).c_str(),
                    terminal_safe(info.backup_set_id()).c_str(), info.tasks_size());
      if (!*wait) return kExitOk;
      int rc = watch_drill(*o, info.restore_id(), ctx.cancel);
      return rc == kExitOk ? kExitOk : kExitError;
    };
  });

  auto* show_cmd = drill->add_subcommand("show", "a drill: each phase's time and every check, expected and found");
  auto id = std::make_shared<std::string>();
  show_cmd->add_option("id", *id, "drill id (or a unique prefix)")->required();
  auto show_o = std::make_shared<OpOptions>();
  add_op_options(show_cmd, *show_o);
  show_cmd->callback([&ctx, o = show_o, id] {
    ctx.action = [o, id]() -> int {
      auto r = show_drill(*o, *id);
      if (o->json)
        std::printf("%s\n", proto_json(r).c_str());
      else
        print_drill(r);
      return kExitOk;
    };
  });

  auto* list_cmd = drill->add_subcommand("list", "list drills, newest first");
  auto limit = std::make_shared<unsigned>(50);
  list_cmd->add_option("--limit", *limit, "at most this many drills")->capture_default_str();
  auto list_o = std::make_shared<OpOptions>();
  add_op_options(list_cmd, *list_o);
  list_cmd->callback([&ctx, o = list_o, limit] {
    ctx.action = [o, limit]() -> int {
      cairn::v1::OperatorRequest q;
      q.mutable_restore_list()->set_limit(*limit);
      q.mutable_restore_list()->set_drills(true);
      auto r = op_call(*o, q);
      if (o->json) {
        std::printf("%s\n", proto_json(r.restore_list()).c_str());
        return kExitOk;
      }
      std::printf("%-20s %-20s %-20s %-20s %s\n", "ID", "CREATED", "FINISHED", "BACKUP SET", "OUTCOME");
      for (const auto& x : r.restore_list().restores())
        std::printf("%-20s %-20s %-20s %-20s %s\n", terminal_safe(x.restore_id()).c_str(), local_time(x.created_at()).c_str(),
                    local_time(x.finished_at()).c_str(), terminal_safe(x.backup_set_id()).c_str(),
                    x.state() == cairn::v1::SET_STATE_COMPLETE ? "proven"
                    : x.verdict() == "not_run"                 ? "not run"
                                                               : set_state_name(x.state()).c_str());
      return kExitOk;
    };
  });
}

}  // namespace cairn::ctl
