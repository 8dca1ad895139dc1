// cairnctl policy list|show|add|edit|remove|pause|resume|run-now, and forget.
#include <cstdio>
#include <optional>

#include "cairnctl/op_client.h"
#include "cairnctl/op_commands.h"
#include "cairnctl/op_view.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/terminal_text.h"

namespace cairn::ctl {
namespace {

std::string when(int64_t t) { return local_time(t); }

// What `policy add` and `policy edit` take; unset options leave an edited
// policy's value as it was.
struct SpecOptions {
  std::optional<std::string> schedule, time_zone, repository, mode, keep_within, drill, drill_on, copy_to;
  std::optional<bool> keep_proven;
  std::vector<std::string> components, nodes, labels;
  std::optional<unsigned> last, hourly, daily, weekly, monthly, yearly, min;
};

void add_spec_options(CLI::App* cmd, SpecOptions& s) {
  cmd->add_option("--schedule", s.schedule, "cron ('0 1 * * *'), @daily, @hourly, @weekly, @monthly, @yearly or '@every 15m'");
  cmd->add_option("--time-zone,--tz", s.time_zone, "IANA time zone of the schedule and of retention's days (default: the controller's)");
  cmd->add_option("--component", s.components, "component name (repeatable; default: all)");
  cmd->add_option("--node", s.nodes, "agent name (repeatable; default: all approved agents)");
  cmd->add_option("--label", s.labels, "agents whose labels include NAME=VALUE (repeatable: all must match)");
  cmd->add_option("--repository", s.repository, "repository name the agents declare (default: each component's own)");
  cmd->add_option("--mode", s.mode, "driver mode for the components that take it (e.g. kafka offline)");
  cmd->add_option("--keep-last", s.last, "keep the newest N complete sets");
  cmd->add_option("--keep-hourly", s.hourly, "keep the newest set of each of the last N hours that have one");
  cmd->add_option("--keep-daily", s.daily, "... days");
  cmd->add_option("--keep-weekly", s.weekly, "... ISO weeks");
  cmd->add_option("--keep-monthly", s.monthly, "... months");
  cmd->add_option("--keep-yearly", s.yearly, "... years");
  cmd->add_option("--keep-within", s.keep_within, "keep every set this much younger than the newest (7d, 36h, 2w, 1y2m)");
  cmd->add_option("--keep-min", s.min, "never fewer complete sets than this, whatever the rules say (runbooks: 7)");
  cmd->add_option("--drill", s.drill,
                  "restore drills of the policy's newest set on this schedule (e.g. @weekly; '' = none; docs/drills.md)");
  cmd->add_option("--drill-on", s.drill_on, "the agent that runs the drills (default: any connected agent with a [drill] section)");
  cmd->add_option("--copy-to", s.copy_to,
                  "copy each complete or partial set to this repository the controller declares (offsite; '' = none)");
  cmd->add_option("--keep-proven", s.keep_proven,
                  "retention keeps each component's newest proven-restorable set while no newer one is proven (default true)");
}

void apply(const SpecOptions& o, cairn::v1::PolicySpec& spec) {
  if (o.schedule) spec.set_schedule(*o.schedule);
  if (o.drill) spec.set_drill(*o.drill);
  if (o.drill_on) spec.set_drill_on(*o.drill_on);
  if (o.copy_to) spec.set_copy_to(*o.copy_to);
  if (o.keep_proven) spec.set_retention_ignores_drills(!*o.keep_proven);
  if (o.time_zone) spec.set_time_zone(*o.time_zone);
  if (o.repository) spec.set_repository(*o.repository);
  if (o.mode) spec.set_mode(*o.mode);
  auto* sel = spec.mutable_selector();
  if (!o.components.empty()) {
    sel->clear_components();
    for (const auto& c : o.components) sel->add_components(c);
  }
  if (!o.nodes.empty()) {
    sel->clear_nodes();
    for (const auto& n : o.nodes) sel->add_nodes(n);
  }
  set_labels(o.labels, *sel);
  auto* r = spec.mutable_retention();
  if (o.last) r->set_last(*o.last);
  if (o.hourly) r->set_hourly(*o.hourly);
  if (o.daily) r->set_daily(*o.daily);
  if (o.weekly) r->set_weekly(*o.weekly);
  if (o.monthly) r->set_monthly(*o.monthly);
  if (o.yearly) r->set_yearly(*o.yearly);
  if (o.min) r->set_min(*o.min);
  if (o.keep_within) {
    int64_t d = parse_duration(*o.keep_within);
    if (d < 0) throw Error(Errc::invalid_input, "--keep-within '" + *o.keep_within + "' is not a duration (try 7d, 36h, 2w)");
    r->set_within_seconds(d);
  }
}

std::string rules(const cairn::v1::Retention& r) {
  std::string out;
  auto add = [&](const char* name, int64_t v) {
    if (v) out += (out.empty() ? "" : ", ") + std::string(name) + " " + std::to_string(v);
  };
  add("last", r.last());
  add("hourly", r.hourly());
  add("daily", r.daily());
  add("weekly", r.weekly());
  add("monthly", r.monthly());
  add("yearly", r.yearly());
  if (r.within_seconds()) out += (out.empty() ? "" : ", ") + std::string("within ") + std::to_string(r.within_seconds() / 3600) + "h";
  add("min", r.min());
  return out.empty() ? "keep everything" : out;
}

std::string selection(const cairn::v1::Selector& s) {
  std::string out;
  auto list = [&](const char* what, const auto& names) {
    if (names.empty()) return;
    std::string l;
    for (const auto& n : names) l += (l.empty() ? "" : ",") + terminal_safe(n);
    out += (out.empty() ? "" : " ") + std::string(what) + "=" + l;
  };
  list("components", s.components());
  list("nodes", s.nodes());
  for (const auto& [k, v] : s.labels()) out += (out.empty() ? "" : " ") + terminal_safe(k) + "=" + terminal_safe(v);
  return out.empty() ? "all components of all agents" : out;
}

std::string run_line(const cairn::v1::PolicyRunInfo& r) {
  std::string s = when(r.at()) + " " + r.trigger() + ": " + r.outcome();
  if (!r.backup_set_id().empty()) s += " " + terminal_safe(r.backup_set_id()) + " (" + set_state_name(r.set_state()) + ")";
  if (!r.reason().empty()) s += ": " + terminal_safe(r.reason());
  return s;
}

void print_policy(const cairn::v1::PolicyInfo& p, bool full) {
  const auto& s = p.spec();
  std::printf("policy %s%s%s\n", terminal_safe(s.name()).c_str(),
              p.source() == "config" ? " (declared in the controller's configuration)" : "", p.paused() ? " [paused]" : "");
  std::printf("  schedule   %s (%s)\n", terminal_safe(s.schedule()).c_str(), terminal_safe(s.time_zone()).c_str());
  std::printf("  selects    %s\n", selection(s.selector()).c_str());
  std::printf("  repository %s\n", s.repository().empty() ? "each component's default" : terminal_safe(s.repository()).c_str());
  if (!s.mode().empty()) std::printf("  mode       %s\n", terminal_safe(s.mode()).c_str());
  std::printf("  retention  %s%s\n", rules(s.retention()).c_str(),
              s.retention_ignores_drills() ? "" : "; the newest proven set of each component is kept");
  if (!s.drill().empty())
    std::printf("  drills     %s on %s, next %s\n", terminal_safe(s.drill()).c_str(),
                s.drill_on().empty() ? "any drill agent" : terminal_safe(s.drill_on()).c_str(),
                p.next_drill() ? when(p.next_drill()).c_str() : "none");
  if (!s.copy_to().empty()) std::printf("  copies to  %s (each complete or partial set)\n", terminal_safe(s.copy_to()).c_str());
  std::printf("  sets       %u (%u expired, being removed)\n", p.sets(), p.sets_expired());
  if (p.next_runs().empty()) std::printf("  next runs  none%s\n", p.paused() ? " (paused)" : "");
  for (int i = 0; i < p.next_runs_size(); ++i) std::printf("  %s %s\n", i == 0 ? "next runs " : "          ", when(p.next_runs(i)).c_str());
  if (p.runs().empty()) std::printf("  runs       none yet\n");
  for (int i = 0; i < p.runs_size() && (full || i == 0); ++i)
    std::printf("  %s %s\n", i == 0 ? "runs      " : "          ", run_line(p.runs(i)).c_str());
}

cairn::v1::PolicyInfo one(const cairn::v1::OperatorResponse& r) {
  if (r.policies().policies().empty()) throw Error(Errc::not_found, "the controller answered without the policy");
  return r.policies().policies(0);
}

// A subcommand taking only a policy name, answered with the policy.
void name_command(CLI::App* policy, Context& ctx, const char* name, const char* help,
                  void (cairn::v1::PolicyRequest::*set)(const std::string&), const char* done) {
  auto* cmd = policy->add_subcommand(name, help);
  auto o = std::make_shared<OpOptions>();
  auto n = std::make_shared<std::string>();
  cmd->add_option("name", *n, "policy name")->required();
  add_op_options(cmd, *o);
  cmd->callback([&ctx, o, n, set, done] {
    ctx.action = [o, n, set, done]() -> int {
      cairn::v1::OperatorRequest q;
      (q.mutable_policy()->*set)(*n);
      auto p = one(op_call(*o, q));
      if (o->json) {
        std::printf("%s\n", proto_json(p).c_str());
        return kExitOk;
      }
      if (*done) std::printf("policy %s: %s\n", terminal_safe(p.spec().name()).c_str(), done);
      print_policy(p, std::string(done).empty());
      return kExitOk;
    };
  });
}

}  // namespace

void register_op_policy(CLI::App& app, Context& ctx) {
  auto* policy = app.add_subcommand("policy", "backup policies: what is backed up when, and what is kept");
  policy->require_subcommand(1);

  auto* list = policy->add_subcommand("list", "every policy with its next run and last run");
  auto o = std::make_shared<OpOptions>();
  add_op_options(list, *o);
  list->callback([&ctx, o] {
    ctx.action = [o]() -> int {
      cairn::v1::OperatorRequest q;
      q.mutable_policy()->set_list(true);
      auto r = op_call(*o, q);
      if (o->json) {
        std::printf("%s\n", proto_json(r.policies()).c_str());
        return kExitOk;
      }
      std::printf("%-20s %-18s %-20s %-7s %s\n", "NAME", "SCHEDULE", "NEXT RUN", "SETS", "LAST RUN");
      for (const auto& p : r.policies().policies())
        std::printf("%-20s %-18s %-20s %-7u %s\n", terminal_safe(p.spec().name()).c_str(), terminal_safe(p.spec().schedule()).c_str(),
                    p.paused()              ? "paused"
                    : p.next_runs().empty() ? "-"
                                            : when(p.next_runs(0)).c_str(),
                    p.sets(), p.runs().empty() ? "-" : run_line(p.runs(0)).c_str());
      return kExitOk;
    };
  });

  for (bool add : {true, false}) {
    auto* cmd = policy->add_subcommand(add ? "add" : "edit", add ? "add a policy" : "change a policy: only the options given change");
    auto n = std::make_shared<std::string>();
    auto spec = std::make_shared<SpecOptions>();
    o = std::make_shared<OpOptions>();
    cmd->add_option("name", *n, "policy name (letters, digits, '.', '_', '-')")->required();
    add_spec_options(cmd, *spec);
    add_op_options(cmd, *o);
    cmd->callback([&ctx, o, n, spec, add] {
      ctx.action = [o, n, spec, add]() -> int {
        cairn::v1::OperatorRequest q;
        cairn::v1::PolicySpec s;
        if (add) {
          if (!spec->schedule) throw Error(Errc::invalid_input, "a policy needs --schedule (e.g. '0 1 * * *', @daily, '@every 15m')");
          s.set_name(*n);
        } else {
          cairn::v1::OperatorRequest show;
          show.mutable_policy()->set_show(*n);
          s = one(op_call(*o, show)).spec();
        }
        apply(*spec, s);
        *(add ? q.mutable_policy()->mutable_add() : q.mutable_policy()->mutable_edit()) = s;
        auto p = one(op_call(*o, q));
        if (o->json) {
          std::printf("%s\n", proto_json(p).c_str());
          return kExitOk;
        }
        std::printf("policy %s %s\n", terminal_safe(p.spec().name()).c_str(), add ? "added" : "changed");
        print_policy(p, false);
        return kExitOk;
      };
    });
  }

  name_command(policy, ctx, "show", "a policy, its next runs and its last 20 runs", &cairn::v1::PolicyRequest::set_show, "");
  name_command(policy, ctx, "remove", "remove a policy (its sets stay)", &cairn::v1::PolicyRequest::set_remove, "removed");
  name_command(policy, ctx, "pause", "stop scheduling a policy's runs", &cairn::v1::PolicyRequest::set_pause, "paused");
  name_command(policy, ctx, "resume", "schedule a paused policy again (from now on: what fell due while paused is not run)",
               &cairn::v1::PolicyRequest::set_resume, "resumed");
  name_command(policy, ctx, "run-now", "run a policy now, outside its schedule (skipped while its previous run runs)",
               &cairn::v1::PolicyRequest::set_run_now, "asked to run now");

  auto* forget = app.add_subcommand("forget",
                                    "apply the policies' retention: expire the sets no rule keeps (their "
                                    "snapshots are removed and the repository pruned by the controller)");
  auto pol = std::make_shared<std::string>();
  auto dry = std::make_shared<bool>(false);
  o = std::make_shared<OpOptions>();
  forget->add_option("--policy", *pol, "only this policy (default: every policy)");
  forget->add_flag("--dry-run,-n", *dry, "show which sets would go and which rule keeps each of the others; change nothing");
  add_op_options(forget, *o);
  forget->callback([&ctx, o, pol, dry] {
    ctx.action = [o, pol, dry]() -> int {
      cairn::v1::OperatorRequest q;
      q.mutable_forget()->set_policy(*pol);
      q.mutable_forget()->set_dry_run(*dry);
      auto r = op_call(*o, q).forget();
      if (o->json) {
        std::printf("%s\n", proto_json(r).c_str());
        return kExitOk;
      }
      size_t going = 0;
      for (const auto& p : r.policies()) {
        std::printf("policy %s (%s):\n", terminal_safe(p.policy()).c_str(), p.rules().c_str());
        if (p.sets().empty()) std::printf("  no sets\n");
        for (const auto& s : p.sets()) {
          std::string why;
          for (const auto& w : s.reasons()) why += (why.empty() ? "" : ", ") + w;
          bool goes = !s.keep();
          going += goes && !s.expired();
          std::printf(
              "  %-6s %-20s %-20s %-9s %s\n", goes ? (s.expired() ? "gone" : "forget") : "keep", terminal_safe(s.backup_set_id()).c_str(),
              when(s.created_at()).c_str(), set_state_name(s.state()).c_str(),
              goes ? (s.expired() ? "expired earlier; its snapshots are being removed" : "no rule keeps it") : ("kept by " + why).c_str());
        }
      }
      if (r.dry_run())
        std::printf("dry run: %zu set(s) would be forgotten; nothing was changed\n", going);
      else
        std::printf(
            "%zu set(s) expired; the controller removes their snapshots and prunes each repository when no "
            "backup writes to it\n",
            going);
      return kExitOk;
    };
  });
}

}  // namespace cairn::ctl
