// cairnctl restore SET [--component C] [--node N] [--target T] [--mode mirror|merge] [--wait], restore show ID,
// restore list
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "cairnctl/op_client.h"
#include "cairnctl/op_commands.h"
#include "cairnctl/op_view.h"
#include "common/plan/recovery_target.h"
#include "common/plan/restore_outcome.h"
#include "common/repo/memory.h"
#include "common/util/terminal_text.h"
#include "proto/restore_step.h"

namespace cairn::ctl {
namespace {

cairn::v1::RestoreInfo show(const OpOptions& o, const std::string& id) {
  cairn::v1::OperatorRequest q;
  q.mutable_restore_show()->set_restore_id(id);
  return op_call(o, q).restore();
}

// Where each member of a cluster restore stands, in words: the restore's
// state alone does not say whether a failed restore left every member on its
// own data, or which member still owes its rollback.
void print_cluster_outcome(const cairn::v1::RestoreInfo& r) {
  using cairn::v1::TaskState;
  struct Member {
    std::string last_step;
    TaskState state = cairn::v1::TASK_STATE_UNSPECIFIED;
    bool rolled_back = false, rollback_owed = false, rollback_failed = false, committed = false, started = false;
    // A rollback cancelled while its agent was away: made again when the
    // agent registers (owed_later), unless given up for good.
    bool rollback_cancelled = false, rollback_given_up = false, rollback_ran = false, rollback_late = false;
    std::vector<std::string> set_aside;  // what the data step set aside, as its metadata names it
    bool left_stopped = false;           // its rollback did not start a member that was not running before
  };
  // Steps in the order they run: tasks made within one second are listed in
  // any order, and a member's later step stands for it.
  auto rank = [](const std::string& step) {
    auto s = proto::restore_step_from_name(step);
    return s && *s != cairn::v1::RESTORE_STEP_ALL ? proto::restore_step_rank(*s) : -1;
  };
  std::map<std::string, std::map<std::string, Member>> clusters;  // component/cluster -> agent -> member
  auto ended_ok = [](TaskState s) { return s == cairn::v1::TASK_STATE_SUCCEEDED || s == cairn::v1::TASK_STATE_PARTIAL; };
  auto open = [](TaskState s) {
    return s == cairn::v1::TASK_STATE_PENDING || s == cairn::v1::TASK_STATE_SENT || s == cairn::v1::TASK_STATE_ACCEPTED ||
           s == cairn::v1::TASK_STATE_RUNNING;
  };
  for (const auto& t : r.tasks()) {
    if (t.restore_step().empty()) continue;
    Member& m = clusters[t.component() + " (cluster '" + t.cluster_id() + "')"][t.agent_name()];
    if (rank(t.restore_step()) >= rank(m.last_step)) {
      m.last_step = t.restore_step();
      m.state = t.state();
    }
    auto meta = nlohmann::json::parse(t.component_metadata().empty() ? std::string("{}") : t.component_metadata(), nullptr, false);
    if (meta.is_object() && t.restore_step() == "data")
      for (const char* k : {"old_data_dir", "old_data_v2", "old_log_v2"})
        if (meta.contains(k) && meta[k].is_string() && !meta[k].get<std::string>().empty())
          m.set_aside.push_back(meta[k].get<std::string>());
    if (meta.is_object() && t.restore_step() == "rollback" && meta.value("started", true) == false && ended_ok(t.state()))
      m.left_stopped = true;
    if (t.restore_step() == "data" && ended_ok(t.state())) m.started = true;
    if (t.restore_step() == "commit") m.committed = ended_ok(t.state());
    if (t.restore_step() == "rollback") {
      bool cancelled = false, given_up = false, lost = false;
      for (const auto& x : t.reasons()) {
        cancelled |= x.code() == cairn::v1::ERROR_CODE_CANCELLED;
        given_up |= x.code() == cairn::v1::ERROR_CODE_CANCELLED && x.detail() == plan::kOwedRollbackGivenUp;
        lost |= x.code() == cairn::v1::ERROR_CODE_AGENT_LOST;
      }
      // A try listed after a cancelled one is the rollback the ended restore owed.
      if (m.rollback_cancelled) m.rollback_late = true;
      m.rolled_back |= ended_ok(t.state());
      // What the rollback set aside as failed, by name: the hint names it.
      if (meta.is_object())
        for (const char* k : {"failed_data_dir", "restored_data_set_aside"})
          if (meta.contains(k) && meta[k].is_string() && !meta[k].get<std::string>().empty())
            m.set_aside.push_back(meta[k].get<std::string>());
      m.rollback_owed = open(t.state());
      m.rollback_cancelled |= cancelled && !given_up;
      m.rollback_given_up |= given_up;
      m.rollback_ran |= t.state() == cairn::v1::TASK_STATE_FAILED && !cancelled && !lost;
      m.rollback_failed = !m.rolled_back && !m.rollback_owed;
    }
  }
  std::vector<std::string> waiting;  // members whose halt or rollback waits for their agent
  for (const auto& [cluster, members] : clusters) {
    std::printf("%s:\n", terminal_safe(cluster).c_str());
    for (const auto& [agent, m] : members) {
      std::string where;
      if (m.last_step == "commit")
        where = m.committed ? "runs on the backup's data (verified, committed)"
                            : "runs on the backup's data (verified); its commit failed, the record it keeps is never acted on";
      else if (m.rolled_back && m.left_stopped)
        where = "rolled back, left stopped: it did not run before the restore, or has no data of its own to run on";
      else if (m.rolled_back)
        where = m.rollback_late ? "runs on its own data again (rolled back when its agent came back, after the restore ended)"
                                : "runs on its own data again (rolled back)";
      else if (m.rollback_owed)
        where = "rollback pending: its agent must come back to put its data back (it runs nothing of this restore now)";
      else if (m.rollback_given_up)
        where =
            "ROLLBACK GIVEN UP by the operator: its data dir is as the restore left it (docs/operations.md § A "
            "restore waiting for a member that is gone)";
      else if (m.rollback_cancelled && !m.rollback_ran)
        where =
            "rollback owed: cancelled while its agent was away; it runs when the agent registers again (revoke "
            "the agent, or cancel again once it is sent, to give it up)";
      else if (m.last_step == "halt" && open(m.state))
        where = "halt pending: no member rolls back until every member's service is stopped; its agent must come back to stop it";
      else if (m.rollback_failed) {
        where = "ROLLBACK FAILED: see its reasons above; ";
        if (m.set_aside.empty()) {
          where += "this restore set nothing aside there";
        } else {
          where += "what this restore set aside there: ";
          for (size_t i = 0; i < m.set_aside.size(); ++i) where += (i ? ", " : "") + terminal_safe(m.set_aside[i]);
        }
      } else if (open(m.state))
        where = "at step '" + m.last_step + "'";
      else if (m.last_step == "preflight")
        where = "unchanged (nothing was stopped)";
      else
        where = "step '" + m.last_step + "' ended " + task_state_name(m.state);
      if (m.rollback_owed || (m.last_step == "halt" && open(m.state))) waiting.push_back(agent);
      std::printf("  %s: %s\n", terminal_safe(agent).c_str(), where.c_str());
    }
  }
  // The way out when a member's host will not come back (docs/operations.md
  // § A restore waiting for a member that is gone).
  if (!waiting.empty() && r.state() == cairn::v1::SET_STATE_RUNNING)
    std::printf(
        "if the host of %s is gone for good: make sure its service is stopped (power the host off), then "
        "'cairnctl backup cancel %s' (docs/operations.md § A restore waiting for a member that is gone)\n",
        terminal_safe(waiting.front()).c_str(), terminal_safe(r.restore_id()).c_str());
}

void print_restore(const cairn::v1::RestoreInfo& r) {
  std::printf("restore %s of backup set %s: %s\n", terminal_safe(r.restore_id()).c_str(), terminal_safe(r.backup_set_id()).c_str(),
              set_state_name(r.state()).c_str());
  std::printf("target %s, %s\n", r.restore_target().empty() ? "in place" : ("'" + terminal_safe(r.restore_target()) + "'").c_str(),
              r.write_mode() == cairn::v1::RESTORE_WRITE_MODE_MERGE ? "merge (entries added since the backup are kept)"
                                                                    : "mirror (entries added since the backup are removed)");
  if (!r.safety_backup_set_id().empty()) std::printf("safety backup set %s\n", terminal_safe(r.safety_backup_set_id()).c_str());
  if (!r.order().empty()) std::printf("order:\n");
  for (int i = 0; i < r.order_size(); ++i) std::printf("  %d. %s\n", i + 1, terminal_safe(r.order(i)).c_str());
  print_tasks(r.tasks());
  print_cluster_outcome(r);
  for (const auto& c : r.set_aside())
    std::printf("set aside on %s: %s (%s, kept: %s)\n", terminal_safe(c.agent()).c_str(), terminal_safe(c.path()).c_str(),
                cairn::repo::byte_size_text(c.bytes()).c_str(), c.keep().empty() ? "no" : terminal_safe(c.keep()).c_str());
}

}  // namespace

int watch_restore(const OpOptions& o, const std::string& given, const std::atomic<bool>& cancel) {
  std::string id = show(o, given).restore_id();  // a prefix becomes the full id
  int rc = wait_for(
      o,
      [&] {
        auto s = show(o, id);
        return WaitView{"restore " + id, s.state(), s.tasks()};
      },
      cancel);
  if (o.json) std::printf("%s\n", proto_json(show(o, id)).c_str());
  return rc;
}

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
  auto require_connected = std::make_shared<bool>(false);
  auto force_identity = std::make_shared<bool>(false);
  auto accept_unattested = std::make_shared<bool>(false);
  auto from_copy = std::make_shared<std::string>();
  auto recovery = std::make_shared<cairn::v1::RecoveryTarget>();
  auto to_time = std::make_shared<std::string>(), to_lsn = std::make_shared<std::string>(), to_xid = std::make_shared<std::string>();
  auto to_latest = std::make_shared<bool>(false), to_immediate = std::make_shared<bool>(false), exclusive = std::make_shared<bool>(false);
  auto target_timeline = std::make_shared<std::string>();
  restore->add_option("set", *set,
                      "backup set id to restore from (or a unique prefix); with a recovery target it may be left "
                      "out: the controller picks the newest base backup consistent before the target");
  restore->add_option("--component", *components, "component name (repeatable; default: all in the set)");
  restore->add_option("--node", *nodes, "agent name or id (repeatable; default: all)");
  restore->add_option("--target", *target, "a restore target the agent declares (default: in place)");
  restore
      ->add_option("--mode", *mode,
                   "mirror: the target ends as in the snapshot, entries added since the backup are removed (they "
                   "are in the safety backup); merge: the snapshot's entries are written, others are left")
      ->check(CLI::IsMember({"mirror", "merge"}))
      ->capture_default_str();
  restore->add_flag("--skip-safety-backup", *skip_safety, "do not back up the current state first (it cannot be undone then)");
  restore->add_flag("--require-connected", *require_connected,
                    "create nothing if a selected agent is not connected now (default: its tasks wait for it)");
  restore->add_flag("--force-identity", *force_identity,
                    "restore even onto a target of another identity (a Kafka broker whose log dirs belong to another "
                    "cluster.id or broker id); refused by default");
  restore->add_flag("--accept-unattested", *accept_unattested,
                    "restore from a set a catalog rebuild took from snapshot tags that no signed set record covers "
                    "('unattested' in 'backup show'); refused by default");
  restore->add_option("--from-copy", *from_copy,
                      "read the snapshots from the set's offsite copy in this repository (a policy's copy_to; the "
                      "agents must declare it under that name), e.g. when the first repository is lost");
  auto* tt = restore->add_option("--to-time", *to_time,
                                 "postgresql: replay WAL up to this time (RFC 3339 with a zone, e.g. "
                                 "2026-11-27T10:00:00Z), then promote");
  auto* tl = restore->add_option("--to-lsn", *to_lsn, "postgresql: replay WAL up to this LSN (e.g. 0/3000060)");
  auto* tx = restore->add_option("--to-xid", *to_xid, "postgresql: replay WAL up to this transaction's commit");
  auto* ta = restore->add_flag("--to-latest", *to_latest, "postgresql: replay every archived WAL segment (the default)");
  auto* ti =
      restore->add_flag("--to-immediate", *to_immediate, "postgresql: stop as soon as the base backup is consistent (no WAL after it)");
  for (auto* a : {tt, tl, tx, ta, ti})
    for (auto* b : {tt, tl, tx, ta, ti})
      if (a != b) a->excludes(b);
  restore->add_flag("--exclusive", *exclusive,
                    "with --to-time, --to-lsn or --to-xid: stop just before the target instead of just after it");
  restore->add_option("--target-timeline", *target_timeline,
                      "postgresql: the timeline recovery follows: latest (the default, as PostgreSQL's: the newest "
                      "the archive holds that branched from the base backup's), current (the base backup's), or a number");
  restore->add_flag("--wait", *wait, "follow progress until the restore ends; exit 0 complete, 3 partial, 1 failed");
  add_op_options(restore, *o);

  auto* show_cmd = restore->add_subcommand("show", "a restore with every task, reason and latest progress");
  auto id = std::make_shared<std::string>();
  show_cmd->add_option("id", *id, "restore id (or a unique prefix)")->required();
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

  auto* list_cmd = restore->add_subcommand("list", "list restores, newest first");
  auto limit = std::make_shared<unsigned>(50);
  list_cmd->add_option("--limit", *limit, "at most this many restores")->capture_default_str();
  auto list_o = std::make_shared<OpOptions>();
  add_op_options(list_cmd, *list_o);
  list_cmd->callback([&ctx, o = list_o, limit] {
    ctx.action = [o, limit]() -> int {
      cairn::v1::OperatorRequest q;
      q.mutable_restore_list()->set_limit(*limit);
      auto r = op_call(*o, q);
      if (o->json) {
        std::printf("%s\n", proto_json(r.restore_list()).c_str());
        return kExitOk;
      }
      std::printf("%-20s %-20s %-9s %-20s %s\n", "ID", "CREATED", "STATE", "BACKUP SET", "SAFETY SET");
      for (const auto& x : r.restore_list().restores())
        std::printf("%-20s %-20s %-9s %-20s %s\n", terminal_safe(x.restore_id()).c_str(), local_time(x.created_at()).c_str(),
                    set_state_name(x.state()).c_str(), terminal_safe(x.backup_set_id()).c_str(),
                    x.safety_backup_set_id().empty() ? "-" : terminal_safe(x.safety_backup_set_id()).c_str());
      return kExitOk;
    };
  });

  restore->callback([&ctx, restore, o, set, components, nodes, wait, skip_safety, target, mode, require_connected, force_identity,
                     accept_unattested, from_copy, to_time, to_lsn, to_xid, to_latest, to_immediate, exclusive, target_timeline] {
    if (restore->got_subcommand("show") || restore->got_subcommand("list")) return;
    cairn::v1::RecoveryTarget rt;
    if (!to_time->empty()) {
      rt.set_kind(cairn::v1::RecoveryTarget::KIND_TIME);
      rt.set_value(*to_time);
    } else if (!to_lsn->empty()) {
      rt.set_kind(cairn::v1::RecoveryTarget::KIND_LSN);
      rt.set_value(*to_lsn);
    } else if (!to_xid->empty()) {
      rt.set_kind(cairn::v1::RecoveryTarget::KIND_XID);
      rt.set_value(*to_xid);
    } else if (*to_latest) {
      rt.set_kind(cairn::v1::RecoveryTarget::KIND_LATEST);
    } else if (*to_immediate) {
      rt.set_kind(cairn::v1::RecoveryTarget::KIND_IMMEDIATE);
    }
    rt.set_exclusive(*exclusive);
    if (!target_timeline->empty()) {
      if (rt.kind() == cairn::v1::RecoveryTarget::KIND_UNSPECIFIED) rt.set_kind(cairn::v1::RecoveryTarget::KIND_LATEST);
      if (rt.kind() == cairn::v1::RecoveryTarget::KIND_IMMEDIATE)
        throw CLI::ValidationError("--target-timeline", "--to-immediate ends on the base backup's own timeline");
      rt.set_timeline(*target_timeline);
    }
    if (*exclusive && rt.kind() == cairn::v1::RecoveryTarget::KIND_UNSPECIFIED)
      throw CLI::ValidationError("--exclusive", "needs --to-time, --to-lsn or --to-xid");
    if (std::string why = cairn::plan::parse_recovery_target(rt, nullptr); !why.empty()) throw CLI::ValidationError("recovery target", why);
    // Without a set, a recovery target lets the controller pick the base backup.
    if (set->empty() && rt.kind() == cairn::v1::RecoveryTarget::KIND_UNSPECIFIED) throw CLI::RequiredError("set");
    ctx.action = [&ctx, o, set, components, nodes, wait, skip_safety, target, mode, require_connected, force_identity, accept_unattested,
                  from_copy, rt]() -> int {
      cairn::v1::OperatorRequest q;
      auto* r = q.mutable_restore();
      r->set_require_connected(*require_connected);
      r->set_backup_set_id(*set);
      r->set_skip_safety_backup(*skip_safety);
      r->set_force_identity(*force_identity);
      r->set_accept_unattested(*accept_unattested);
      r->set_from_copy(*from_copy);
      r->set_restore_target(*target);
      if (rt.kind() != cairn::v1::RecoveryTarget::KIND_UNSPECIFIED) *r->mutable_recovery_target() = rt;
      r->set_write_mode(*mode == "merge" ? cairn::v1::RESTORE_WRITE_MODE_MERGE : cairn::v1::RESTORE_WRITE_MODE_MIRROR);
      for (const auto& c : *components) r->mutable_selector()->add_components(c);
      for (const auto& n : *nodes) r->mutable_selector()->add_nodes(n);
      auto info = op_call(*o, q).restore();
      if (o->json && !*wait) {
        std::printf("%s\n", proto_json(info).c_str());
        return kExitOk;
      }
      if (!o->json)
        std::printf("restore %s created with %d task(s) from set %s\n", terminal_safe(info.restore_id()).c_str(), info.tasks_size(),
                    terminal_safe(info.backup_set_id()).c_str());
      if (!o->json) print_offline_agents(info.tasks());
      if (!*wait) return kExitOk;
      int rc = watch_restore(*o, info.restore_id(), ctx.cancel);
      // A recovery to a target branches the component's log: a base backup
      // taken now is where a later recovery should start (docs/postgresql.md
      // § Timelines).
      if (!o->json && rt.kind() != cairn::v1::RecoveryTarget::KIND_UNSPECIFIED && (rc == kExitOk || rc == kExitPartial)) {
        const cairn::v1::RestoreInfo ended = show(*o, info.restore_id());
        for (const auto& t : ended.tasks())
          if (t.kind() == cairn::v1::TASK_KIND_RESTORE &&
              (t.state() == cairn::v1::TASK_STATE_SUCCEEDED || t.state() == cairn::v1::TASK_STATE_PARTIAL))
            std::printf(
                "next: '%s' on %s now runs on a new timeline of its log; take a base backup on it "
                "(cairnctl backup create --component %s --node %s --wait) so that a later recovery starts "
                "from here, not from set %s\n",
                terminal_safe(t.component()).c_str(), terminal_safe(t.agent_name()).c_str(), terminal_safe(t.component()).c_str(),
                terminal_safe(t.agent_name()).c_str(), terminal_safe(info.backup_set_id()).c_str());
      }
      return rc;
    };
  });
}

}  // namespace cairn::ctl
