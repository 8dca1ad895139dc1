// cairnctl restore SET [--component C] [--node N] [--target T] [--mode mirror|merge] [--wait], restore show ID
#include <cstdio>

#include "cairnctl/op_client.h"
#include "cairnctl/op_commands.h"
#include "cairnctl/op_view.h"

namespace cairn::ctl {
namespace {

cairn::v1::RestoreInfo show(const OpOptions& o, const std::string& id) {
  cairn::v1::OperatorRequest q;
  q.mutable_restore_show()->set_restore_id(id);
  return op_call(o, q).restore();
}

void print_restore(const cairn::v1::RestoreInfo& r) {
  std::printf("restore %s of backup set %s: %s\n", r.restore_id().c_str(), r.backup_set_id().c_str(),
              set_state_name(r.state()).c_str());
  std::printf("target %s, %s\n", r.restore_target().empty() ? "in place" : ("'" + r.restore_target() + "'").c_str(),
              r.write_mode() == cairn::v1::RESTORE_WRITE_MODE_MERGE ? "merge (entries added since the backup are kept)"
                                                                     : "mirror (entries added since the backup are removed)");
  if (!r.safety_backup_set_id().empty()) std::printf("safety backup set %s\n", r.safety_backup_set_id().c_str());
  print_tasks(r.tasks());
}

}  // namespace

void register_op_restore(CLI::App& app, Context& ctx) {
  auto* restore = app.add_subcommand("restore", "restore a backup set through the controller");
  auto o = std::make_shared<OpOptions>();
  auto set = std::make_shared<std::string>();
  auto components = std::make_shared<std::vector<std::string>>();
  auto nodes = std::make_shared<std::vector<std::string>>();
  auto wait = std::make_shared<bool>(false);
  auto skip_safety = std::make_shared<bool>(false);
  auto target = std::make_shared<std::string>();
  auto mode = std::make_shared<std::string>("mirror");
  restore->add_option("set", *set, "backup set id to restore from");
  restore->add_option("--component", *components, "component name (repeatable; default: all in the set)");
  restore->add_option("--node", *nodes, "agent name or id (repeatable; default: all)");
  restore->add_option("--target", *target, "a restore target the agent declares (default: in place)");
  restore->add_option("--mode", *mode,
                      "mirror: the target ends as in the snapshot, entries added since the backup are removed (they "
                      "are in the safety backup); merge: the snapshot's entries are written, others are left")
      ->check(CLI::IsMember({"mirror", "merge"}))
      ->capture_default_str();
  restore->add_flag("--skip-safety-backup", *skip_safety,
                    "do not back up the current state first (it cannot be undone then)");
  restore->add_flag("--wait", *wait, "follow progress until the restore ends; exit 0 complete, 3 partial, 1 failed");
  add_op_options(restore, *o);

  auto* show_cmd = restore->add_subcommand("show", "a restore with every task, reason and latest progress");
  auto id = std::make_shared<std::string>();
  show_cmd->add_option("id", *id, "restore id")->required();
  auto show_o = std::make_shared<OpOptions>();  // one per subcommand (see op_agent.cc)
  add_op_options(show_cmd, *show_o);
  show_cmd->callback([&ctx, o = show_o, id] {
    ctx.action = [o, id]() -> int {
      auto r = show(*o, *id);
      if (o->json)
        std::printf("%s\n", proto_json(r).c_str());
      else
        print_restore(r);
      return kExitOk;
    };
  });

  restore->callback([&ctx, restore, o, set, components, nodes, wait, skip_safety, target, mode] {
    if (restore->got_subcommand("show")) return;
    if (set->empty()) throw CLI::RequiredError("set");
    ctx.action = [&ctx, o, set, components, nodes, wait, skip_safety, target, mode]() -> int {
      cairn::v1::OperatorRequest q;
      auto* r = q.mutable_restore();
      r->set_backup_set_id(*set);
      r->set_skip_safety_backup(*skip_safety);
      r->set_restore_target(*target);
      r->set_write_mode(*mode == "merge" ? cairn::v1::RESTORE_WRITE_MODE_MERGE : cairn::v1::RESTORE_WRITE_MODE_MIRROR);
      for (const auto& c : *components) r->mutable_selector()->add_components(c);
      for (const auto& n : *nodes) r->mutable_selector()->add_nodes(n);
      auto info = op_call(*o, q).restore();
      if (o->json && !*wait) {
        std::printf("%s\n", proto_json(info).c_str());
        return kExitOk;
      }
      if (!o->json) std::printf("restore %s created with %d task(s)\n", info.restore_id().c_str(), info.tasks_size());
      if (!*wait) return kExitOk;
      std::string rid = info.restore_id();
      int rc = wait_for(*o, [&] {
        auto s = show(*o, rid);
        return WaitView{"restore " + rid, s.state(), s.tasks()};
      }, ctx.cancel);
      if (o->json) std::printf("%s\n", proto_json(show(*o, rid)).c_str());
      return rc;
    };
  });
}

}  // namespace cairn::ctl
