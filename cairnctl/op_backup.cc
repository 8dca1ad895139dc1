// cairnctl backup create|list|show|cancel|watch
#include <cstdio>

#include "cairnctl/op_client.h"
#include "cairnctl/op_commands.h"
#include "cairnctl/op_view.h"
#include "common/repo/memory.h"
#include "common/util/terminal_text.h"

namespace cairn::ctl {
namespace {

std::string when(int64_t t) { return local_time(t); }

cairn::v1::BackupSetInfo show(const OpOptions& o, const std::string& id) {
  cairn::v1::OperatorRequest q;
  q.mutable_backup_show()->set_backup_set_id(id);
  return op_call(o, q).backup_set();
}

// A safety set holds the state before a restore, not a backup anyone asked for.
bool is_safety(const cairn::v1::BackupSetInfo& s) { return s.trigger() == "safety"; }

std::string safety_note(const cairn::v1::BackupSetInfo& s) {
  return is_safety(s) ? "safety backup for restore " + terminal_safe(s.safety_for_restore_id()) : std::string();
}

// The --wait view of a backup set, then the final state as JSON with --json.
int watch_set(const OpOptions& o, const std::string& id, const std::atomic<bool>& cancel) {
  int rc = wait_for(
      o,
      [&] {
        auto s = show(o, id);
        return WaitView{"backup set " + id, s.state(), s.tasks()};
      },
      cancel);
  if (o.json) std::printf("%s\n", proto_json(show(o, id)).c_str());
  return rc;
}

void print_set(const cairn::v1::BackupSetInfo& s) {
  if (is_safety(s))
    std::printf("%s, set %s: %s\n", safety_note(s).c_str(), terminal_safe(s.backup_set_id()).c_str(), set_state_name(s.state()).c_str());
  else
    std::printf("backup set %s: %s\n", terminal_safe(s.backup_set_id()).c_str(), set_state_name(s.state()).c_str());
  std::printf("created %s by %s, finished %s\n", when(s.created_at()).c_str(), terminal_safe(s.requested_by()).c_str(),
              when(s.finished_at()).c_str());
  if (s.unattested())
    std::printf(
        "UNATTESTED: rebuilt from snapshot tags that no set record signed by the controller covers (anyone with "
        "the repository's password could have written them); a restore needs --accept-unattested\n");
  else if (s.signed_record_in_size()) {
    std::string in;
    for (const auto& r : s.signed_record_in()) in += (in.empty() ? "" : ", ") + terminal_safe(r);
    std::printf("signed set record in: %s\n", in.c_str());
  }
  print_tasks(s.tasks());
  // Proven restorable, per drilled snapshot (docs/drills.md).
  for (const auto& d : s.drills()) {
    std::string what = terminal_safe(d.component()) + (d.agent_name().empty() ? "" : " of " + terminal_safe(d.agent_name()));
    if (d.state() == cairn::v1::SET_STATE_COMPLETE)
      std::printf("%s: proven restorable at %s (drill %s)\n", what.c_str(), when(d.finished_at()).c_str(),
                  terminal_safe(d.drill_id()).c_str());
    else if (d.state() == cairn::v1::SET_STATE_RUNNING)
      std::printf("%s: drill %s running\n", what.c_str(), terminal_safe(d.drill_id()).c_str());
    else
      std::printf("%s: DRILL FAILED at %s (drill %s): %s\n", what.c_str(), when(d.finished_at()).c_str(),
                  terminal_safe(d.drill_id()).c_str(), terminal_safe(d.failure()).c_str());
  }
  // Offsite copies (a policy's copy_to; docs/operations.md § Offsite copies).
  for (const auto& c : s.copies()) {
    std::string to = "copy to '" + terminal_safe(c.repository()) + "'";
    if (c.removed())
      std::printf("%s: removed by retention\n", to.c_str());
    else if (c.state() == "copied")
      std::printf("%s: copied at %s (%lld snapshot(s), %s read, %lld blob(s) new there)\n", to.c_str(), when(c.finished_at()).c_str(),
                  static_cast<long long>(c.snapshots()),
                  cairn::repo::byte_size_text(uint64_t(c.bytes()), cairn::repo::ByteText::tenths).c_str(),
                  static_cast<long long>(c.blobs_new()));
    else if (c.state() == "copying")
      std::printf("%s: copying since %s: %lld of %lld snapshot(s), %s of %s%s\n", to.c_str(), when(c.started_at()).c_str(),
                  static_cast<long long>(c.snapshots()), static_cast<long long>(c.snapshots_total()),
                  cairn::repo::byte_size_text(uint64_t(c.bytes()), cairn::repo::ByteText::tenths).c_str(),
                  cairn::repo::byte_size_text(uint64_t(c.bytes_total()), cairn::repo::ByteText::tenths).c_str(),
                  c.attempts() ? (" (attempt " + std::to_string(c.attempts() + 1) + ")").c_str() : "");
    else if (c.state() == "failed")
      std::printf("%s: COPY FAILED at %s (attempt %lld): %s; next attempt %s\n", to.c_str(), when(c.finished_at()).c_str(),
                  static_cast<long long>(c.attempts()), terminal_safe(c.reason()).c_str(), when(c.next_attempt_at()).c_str());
    else
      std::printf("%s: pending\n", to.c_str());
  }
}

}  // namespace

void register_op_backup(CLI::App& app, Context& ctx) {
  auto* backup = app.add_subcommand("backup", "back up components through the controller");
  backup->require_subcommand(1);
  // One options object per subcommand (see op_agent.cc).
  auto o = std::make_shared<OpOptions>();
  auto* create = backup->add_subcommand("create", "start a backup set on the selected agents and components");
  auto components = std::make_shared<std::vector<std::string>>();
  auto nodes = std::make_shared<std::vector<std::string>>();
  auto wait = std::make_shared<bool>(false);
  auto require_connected = std::make_shared<bool>(false);
  auto mode = std::make_shared<std::string>();
  create->add_option("--component", *components, "component name (repeatable; default: all)");
  create->add_option("--mode", *mode,
                     "a driver mode for the components that declare it (kafka: online, the default, or offline: the "
                     "broker is stopped, stored, started); refused when no selected component takes it");
  create->add_option("--node", *nodes, "agent name or id (repeatable; default: all approved agents)");
  auto labels = std::make_shared<std::vector<std::string>>();
  create->add_option("--label", *labels, "only agents whose labels include NAME=VALUE (repeatable: all must match)");
  create->add_flag("--wait", *wait, "follow progress until the set ends; exit 0 complete, 3 partial, 1 failed");
  create->add_flag("--require-connected", *require_connected,
                   "create nothing if a selected agent is not connected now (default: its tasks wait for it)");
  add_op_options(create, *o);
  create->callback([&ctx, o, components, nodes, wait, require_connected, mode, labels] {
    ctx.action = [&ctx, o, components, nodes, wait, require_connected, mode, labels]() -> int {
      cairn::v1::OperatorRequest q;
      q.mutable_backup_create()->set_require_connected(*require_connected);
      q.mutable_backup_create()->set_mode(*mode);
      auto* sel = q.mutable_backup_create()->mutable_selector();
      for (const auto& c : *components) sel->add_components(c);
      for (const auto& n : *nodes) sel->add_nodes(n);
      set_labels(*labels, *sel);
      auto set = op_call(*o, q).backup_set();
      if (o->json && !*wait) {
        std::printf("%s\n", proto_json(set).c_str());
        return kExitOk;
      }
      if (!o->json) std::printf("backup set %s created with %d task(s)\n", terminal_safe(set.backup_set_id()).c_str(), set.tasks_size());
      if (!o->json) print_offline_agents(set.tasks());
      if (!*wait) return kExitOk;
      return watch_set(*o, set.backup_set_id(), ctx.cancel);
    };
  });

  auto* list = backup->add_subcommand("list", "list backup sets, newest first");
  auto limit = std::make_shared<unsigned>(50);
  o = std::make_shared<OpOptions>();
  list->add_option("--limit", *limit, "at most this many sets")->capture_default_str();
  add_op_options(list, *o);
  list->callback([&ctx, o, limit] {
    ctx.action = [o, limit]() -> int {
      cairn::v1::OperatorRequest q;
      q.mutable_backup_list()->set_limit(*limit);
      auto r = op_call(*o, q);
      if (o->json) {
        std::printf("%s\n", proto_json(r.backup_list()).c_str());
        return kExitOk;
      }
      std::printf("%-20s %-20s %-7s %-9s %s\n", "ID", "CREATED", "KIND", "STATE", "REQUESTED BY");
      for (const auto& s : r.backup_list().sets()) {
        std::string note = is_safety(s) ? " (" + safety_note(s) + ")" : "";
        if (s.unattested()) note += " (unattested: restored only with --accept-unattested)";
        for (const auto& d : s.drills())
          note += d.state() == cairn::v1::SET_STATE_COMPLETE ? " (" + terminal_safe(d.component()) + " proven restorable)"
                  : d.state() == cairn::v1::SET_STATE_FAILED ? " (" + terminal_safe(d.component()) + " DRILL FAILED)"
                                                             : "";
        for (const auto& c : s.copies())
          if (!c.removed() && c.state() != "copied")
            note += " (copy to " + terminal_safe(c.repository()) +
                    (c.state() == "failed"    ? " FAILED)"
                     : c.state() == "copying" ? " running)"
                                              : " pending)");
        if (s.forgotten_at())
          note += " (expired by retention; snapshots removed: cannot be restored)";
        else if (s.expired_at())
          note += " (expired by retention; snapshots being removed)";
        std::printf("%-20s %-20s %-7s %-9s %s%s\n", terminal_safe(s.backup_set_id()).c_str(), when(s.created_at()).c_str(),
                    is_safety(s) ? "safety" : "backup", set_state_name(s.state()).c_str(), terminal_safe(s.requested_by()).c_str(),
                    note.c_str());
      }
      return kExitOk;
    };
  });

  auto* show_cmd = backup->add_subcommand("show", "a backup set with every task, reason and latest progress");
  auto id = std::make_shared<std::string>();
  show_cmd->add_option("id", *id, "backup set id (or a unique prefix)")->required();
  o = std::make_shared<OpOptions>();
  add_op_options(show_cmd, *o);
  show_cmd->callback([&ctx, o, id] {
    ctx.action = [o, id]() -> int {
      auto s = show(*o, *id);
      if (o->json)
        std::printf("%s\n", proto_json(s).c_str());
      else
        print_set(s);
      return kExitOk;
    };
  });

  auto* cancel_cmd = backup->add_subcommand("cancel", "end every open task of a backup set or restore as failed ('cancelled by operator')");
  auto cancel_id = std::make_shared<std::string>();
  cancel_cmd->add_option("id", *cancel_id, "backup set or restore id (or a unique prefix)")->required();
  o = std::make_shared<OpOptions>();
  add_op_options(cancel_cmd, *o);
  cancel_cmd->callback([&ctx, o, cancel_id] {
    ctx.action = [o, cancel_id]() -> int {
      cairn::v1::OperatorRequest q;
      q.mutable_backup_cancel()->set_id(*cancel_id);
      auto r = op_call(*o, q);
      bool restore = r.has_restore();
      if (o->json) {
        std::printf("%s\n", restore ? proto_json(r.restore()).c_str() : proto_json(r.backup_set()).c_str());
        return kExitOk;
      }
      const auto& tasks = restore ? r.restore().tasks() : r.backup_set().tasks();
      int n = 0;
      for (const auto& t : tasks)
        for (const auto& why : t.reasons()) n += why.code() == cairn::v1::ERROR_CODE_CANCELLED;
      std::printf(
          "%s %s: %s; %d task(s) cancelled (an agent already working on one finishes it, and its result is "
          "ignored)\n",
          restore ? "restore" : "backup set", terminal_safe(restore ? r.restore().restore_id() : r.backup_set().backup_set_id()).c_str(),
          set_state_name(restore ? r.restore().state() : r.backup_set().state()).c_str(), n);
      return kExitOk;
    };
  });

  auto* watch_cmd = backup->add_subcommand("watch", "follow a running backup set or restore again (the --wait view)");
  auto watch_id = std::make_shared<std::string>();
  watch_cmd->add_option("id", *watch_id, "backup set or restore id (or a unique prefix)")->required();
  o = std::make_shared<OpOptions>();
  add_op_options(watch_cmd, *o);
  watch_cmd->callback([&ctx, o, watch_id] {
    ctx.action = [&ctx, o, watch_id]() -> int {
      // Ids say what they are: rs-... restores, anything else a backup set.
      if (watch_id->rfind("rs-", 0) == 0) return watch_restore(*o, *watch_id, ctx.cancel);
      return watch_set(*o, show(*o, *watch_id).backup_set_id(), ctx.cancel);
    };
  });
}

}  // namespace cairn::ctl
