// cairnctl agent list|approve|revoke
#include <unistd.h>

#include <cstdio>
#include <ctime>

#include "cairnctl/op_client.h"
#include "cairnctl/op_commands.h"
#include "common/util/terminal_text.h"
#include "proto/error_code.h"

namespace cairn::ctl {
namespace {

std::string state_name(cairn::v1::AgentState s) {
  switch (s) {
    case cairn::v1::AGENT_STATE_PENDING:
      return "pending";
    case cairn::v1::AGENT_STATE_APPROVED:
      return "approved";
    case cairn::v1::AGENT_STATE_REVOKED:
      return "revoked";
    default:
      return "unknown";
  }
}

std::string ago(int64_t t) {
  if (t <= 0) return "never";
  int64_t d = int64_t(std::time(nullptr)) - t;
  if (d < 0) d = 0;
  return human_duration(double(d)) + " ago";
}

void print_agent_line(const cairn::v1::AgentInfo& a) {
  std::string comps;
  for (const auto& c : a.components()) comps += (comps.empty() ? "" : ",") + c.name();
  // Whether the agent trusts the active signing key (after a rotation: whether it got the announcement).
  // "?" until the agent reported its keys (it registers again after an upgrade).
  const char* key = a.state() != cairn::v1::AGENT_STATE_APPROVED ? "-"
                    : a.trusts_active_key()                      ? "yes"
                    : a.trusted_key_ids().empty()                ? "?"
                                                                 : "no";
  // Names come from the agent's Register: shown escaped.
  std::printf("%-20s %-24s %-9s %-9s %-14s %-10s %s\n", terminal_safe(a.agent_id()).c_str(), terminal_safe(a.name()).c_str(),
              state_name(a.state()).c_str(), a.connected() ? "yes" : "no", ago(a.last_seen()).c_str(), key,
              comps.empty() ? "-" : terminal_safe(comps).c_str());
}

// Lists the pending agents with their keys, asks (unless yes), and approves
// exactly the ones listed: one that became pending after the list is not.
int approve_all_pending(const OpOptions& o, bool yes, bool named) {
  if (named) throw Error(Errc::invalid_input, "give an agent or --all-pending, not both");
  cairn::v1::OperatorRequest lq;
  lq.mutable_agent_list();
  auto agents = op_call(o, lq).agent_list();
  cairn::v1::OperatorRequest q;
  auto* req = q.mutable_agent_approve();
  // An identity a catalog rebuild (or an import) made from what its snapshots
  // say, and whose key never knocked since, may be lost with its host: it is
  // left pending (approve it by name once it connects). An approved agent
  // that registers with its name takes the name over.
  std::vector<const cairn::v1::AgentInfo*> unseen;
  for (const auto& a : agents.agents())
    if (a.state() == cairn::v1::AGENT_STATE_PENDING) {
      if (a.last_seen() == 0)
        unseen.push_back(&a);
      else
        req->add_agent_ids(a.agent_id());
    }
  for (const auto* a : unseen)
    std::fprintf(stderr,
                 "left pending: '%s' (%s) was rebuilt from the repository and has never connected since; its key may be "
                 "lost with its host (an approved agent registering as '%s' takes the name over; approve this one by "
                 "name only once it connects)\n",
                 terminal_safe(a->name()).c_str(), terminal_safe(a->agent_id()).c_str(), terminal_safe(a->name()).c_str());
  if (req->agent_ids_size() == 0) {
    std::printf("no agent is pending%s\n", unseen.empty() ? "" : " that has connected");
    return kExitOk;
  }
  std::fprintf(stderr, "%d pending agent(s): compare each key with the one its agent logs at start\n", req->agent_ids_size());
  for (const auto& a : agents.agents())
    if (a.state() == cairn::v1::AGENT_STATE_PENDING && a.last_seen() != 0)
      std::fprintf(stderr, "  %-24s %-20s key %s\n", terminal_safe(a.name()).c_str(), terminal_safe(a.agent_id()).c_str(),
                   terminal_safe(a.curve_public_key()).c_str());
  if (!yes) {
    if (!::isatty(STDIN_FILENO))
      throw Error(Errc::invalid_input, "approving " + std::to_string(req->agent_ids_size()) +
                                           " agent(s) needs a confirmation: run it on a terminal, or give --yes");
    std::fprintf(stderr, "approve these %d agent(s)? [y/N] ", req->agent_ids_size());
    std::fflush(stderr);
    char line[16] = {};
    if (!std::fgets(line, sizeof line, stdin) || (line[0] != 'y' && line[0] != 'Y')) {
      std::fprintf(stderr, "nothing approved\n");
      return kExitError;
    }
  }
  auto r = op_call(o, q);
  if (o.json) {
    std::printf("%s\n", agent_list_json(r.agent_list()).c_str());
    return kExitOk;
  }
  std::printf("approved %d agent(s)", r.agent_list().agents_size());
  if (r.agent_list().agents_size() < req->agent_ids_size())
    std::printf("; %d were no longer pending and were left as they are", req->agent_ids_size() - r.agent_list().agents_size());
  std::printf("\n");
  return kExitOk;
}

}  // namespace

void register_op_agent(CLI::App& app, Context& ctx) {
  auto* agent = app.add_subcommand("agent", "list, approve and revoke agents (via the controller)");
  agent->require_subcommand(1);
  auto* list = agent->add_subcommand("list", "list enrolled agents");
  // One options object per subcommand: CLI11 fills every bound variable from
  // the environment, so a shared one would take the values of another command.
  auto o = std::make_shared<OpOptions>();
  add_op_options(list, *o);
  list->callback([&ctx, o] {
    ctx.action = [o]() -> int {
      cairn::v1::OperatorRequest q;
      q.mutable_agent_list();
      auto r = op_call(*o, q);
      if (o->json) {
        std::printf("%s\n", agent_list_json(r.agent_list()).c_str());
        return kExitOk;
      }
      std::printf("%-20s %-24s %-9s %-9s %-14s %-10s %s\n", "ID", "NAME", "STATE", "CONNECTED", "LAST SEEN", "KEY TRUST", "COMPONENTS");
      for (const auto& a : r.agent_list().agents()) print_agent_line(a);
      // Pending agents are approved by key: show it so it can be compared with the agent's.
      for (const auto& a : r.agent_list().agents())
        if (a.state() == cairn::v1::AGENT_STATE_PENDING)
          std::printf("pending %s key %s\n", terminal_safe(a.name()).c_str(), terminal_safe(a.curve_public_key()).c_str());
      return kExitOk;
    };
  });

  for (bool approve : {true, false}) {
    auto* cmd =
        agent->add_subcommand(approve ? "approve" : "revoke", approve ? "admit a pending agent" : "cut an agent off at once (final)");
    auto who = std::make_shared<std::string>();
    auto* pos = cmd->add_option("agent", *who, "agent id or name");
    auto all = std::make_shared<bool>(false), yes = std::make_shared<bool>(false);
    if (approve) {
      cmd->add_flag("--all-pending", *all, "every pending agent: their names and keys are listed first, and exactly those are approved");
      cmd->add_flag("--yes", *yes, "with --all-pending: approve without asking (the list is still printed)");
    } else {
      pos->required();
    }
    auto o = std::make_shared<OpOptions>();
    add_op_options(cmd, *o);
    cmd->callback([&ctx, o, who, approve, all, yes] {
      ctx.action = [o, who, approve, all, yes]() -> int {
        if (approve && *all) return approve_all_pending(*o, *yes, !who->empty());
        if (who->empty()) throw Error(Errc::invalid_input, "name the agent (id or name), or give --all-pending");
        cairn::v1::OperatorRequest q;
        if (approve)
          q.mutable_agent_approve()->set_agent(*who);
        else
          q.mutable_agent_revoke()->set_agent(*who);
        auto r = op_call(*o, q);
        if (o->json) {
          std::printf("%s\n", proto_json(r.agent()).c_str());
          return kExitOk;
        }
        std::printf("agent '%s' (%s) is %s\n", terminal_safe(r.agent().name()).c_str(), terminal_safe(r.agent().agent_id()).c_str(),
                    state_name(r.agent().state()).c_str());
        return kExitOk;
      };
    });
  }
}

}  // namespace cairn::ctl
