// cairnctl status
#include <algorithm>
#include <cstdio>
#include <ctime>

#include "cairnctl/op_client.h"
#include "cairnctl/op_commands.h"
#include "cairnctl/op_view.h"
#include "common/repo/memory.h"
#include "common/util/terminal_text.h"

namespace cairn::ctl {
namespace {

std::string age(int64_t t, int64_t now) {
  if (t <= 0) return "never";
  int64_t s = std::max<int64_t>(0, now - t);
  char buf[32];
  if (s < 120)
    std::snprintf(buf, sizeof buf, "%llds ago", (long long)s);
  else if (s < 7200)
    std::snprintf(buf, sizeof buf, "%lldm ago", (long long)(s / 60));
  else if (s < 172800)
    std::snprintf(buf, sizeof buf, "%lldh ago", (long long)(s / 3600));
  else
    std::snprintf(buf, sizeof buf, "%lldd ago", (long long)(s / 86400));
  return buf;
}

}  // namespace

void register_op_status(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("status", "the controller's state at a glance");
  auto o = std::make_shared<OpOptions>();
  add_op_options(cmd, *o);
  cmd->callback([&ctx, o] {
    ctx.action = [o]() -> int {
      cairn::v1::OperatorRequest q;
      q.mutable_status();
      auto r = op_call(*o, q);
      const auto& s = r.status();
      if (o->json) {
        std::printf("%s\n", proto_json(s).c_str());
        return kExitOk;
      }
      // What an on-call operator asks first: how much data an outage would
      // cost now, when a backup last proved it restores, and how long that took.
      if (s.components_size()) {
        const int64_t now = ::time(nullptr);
        std::printf("%-16s %-26s %-16s %-16s %s\n", "COMPONENT", "WHERE", "NEWEST BACKUP", "PROVEN RESTORE", "MEASURED RTO");
        for (const auto& c : s.components()) {
          char rto[32] = "-";
          if (c.proven_at()) std::snprintf(rto, sizeof rto, "%.1fs", c.rto_seconds());
          std::printf("%-16s %-26s %-16s %-16s %s\n", terminal_safe(c.component()).c_str(), terminal_safe(c.where()).c_str(),
                      age(c.newest_backup_at(), now).c_str(), age(c.proven_at(), now).c_str(), rto);
          // What is wrong, one line each, under the row.
          if (!c.newest_backup_failure().empty())
            std::printf("%-16s %-26s NEWEST BACKUP %s (%s)\n", "", "", terminal_safe(first_line(c.newest_backup_failure())).c_str(),
                        age(c.newest_backup_failed_at(), now).c_str());
          if (!c.last_drill_failure().empty())
            std::printf("%-16s %-26s LAST DRILL FAILED: %s\n", "", "", terminal_safe(first_line(c.last_drill_failure())).c_str());
          if (!c.last_drill_not_run().empty())
            std::printf("%-16s %-26s last drill could not run (proves nothing about the backup): %s\n", "", "",
                        terminal_safe(first_line(c.last_drill_not_run())).c_str());
          if (c.wal_archived_at() || c.wal_pending() || !c.wal_last_error().empty())
            std::printf("%-16s %-26s WAL archived %s, %u file(s) waiting%s\n", "", "",
                        c.wal_archived_at() ? age(c.wal_archived_at(), now).c_str() : "never", c.wal_pending(),
                        c.wal_last_error().empty() ? "" : ("; FAILING: " + terminal_safe(c.wal_last_error())).c_str());
          if (c.set_aside_copies())
            std::printf("%-16s %-26s set aside by restores: %u cop%s, %s%s\n", "", "", c.set_aside_copies(),
                        c.set_aside_copies() == 1 ? "y" : "ies", cairn::repo::byte_size_text(c.set_aside_bytes()).c_str(),
                        c.set_aside_only_copies() ? (", " + std::to_string(c.set_aside_only_copies()) +
                                                     " the only copy of their data (cairn-agent set-aside list)")
                                                        .c_str()
                                                  : "");
          for (const auto& g : c.wal_gaps()) std::printf("%-16s %-26s WAL GAP: %s\n", "", "", terminal_safe(g).c_str());
        }
        std::printf("\n");
      }
      std::printf("controller        %s at %s\n", terminal_safe(s.controller_version()).c_str(), terminal_safe(o->controller).c_str());
      std::printf("agents            %u approved, %u pending, %u connected\n", s.agents_approved(), s.agents_pending(),
                  s.agents_connected());
      std::printf("backup sets       %u running\n", s.sets_running());
      std::printf("signing key       %s\n", terminal_safe(s.active_key_id()).c_str());
      std::printf("audit outbox      %llu unpublished\n", (unsigned long long)s.audit_outbox_pending());
      const auto& ap = s.audit_publisher();
      if (!ap.enabled())
        std::printf("audit publisher   off ([audit.kafka] not configured)\n");
      else if (ap.connected())
        std::printf(
            "audit publisher   publishing: through seq %lld, %lld checkpoints since start%s\n", (long long)ap.published_seq(),
            (long long)ap.checkpoints(),
            ap.last_checkpoint_unix()
                ? (", the newest " + std::to_string(std::max<int64_t>(0, ::time(nullptr) - ap.last_checkpoint_unix())) + " s ago").c_str()
                : "");
      else
        std::printf("audit publisher   waiting for Kafka: %s\n",
                    terminal_safe(ap.last_error().empty() ? "not connected yet" : ap.last_error()).c_str());
      if (ap.enabled() && !ap.topic_problem().empty())
        std::printf("audit topic       PROBLEM: %s\n", terminal_safe(ap.topic_problem()).c_str());
      // The controller's verification of its repositories (docs/operations.md § Verification).
      const int64_t now = ::time(nullptr);
      for (const auto& r : s.repositories()) {
        std::string line;
        if (r.verified_at()) {
          line = "verified " + age(r.verified_at(), now) + ": " +
                 (r.missing_size() ? std::to_string(r.missing_size()) + " of the " + std::to_string(r.snapshots_expected()) +
                                         " snapshot(s) the catalog holds there are MISSING"
                                   : "all " + std::to_string(r.snapshots_expected()) + " snapshot(s) the catalog holds there are listed");
        } else {
          line = r.error().empty() ? "not verified yet" : "never listed";
        }
        std::printf("repository        %s: %s\n", terminal_safe(r.name()).c_str(), terminal_safe(line).c_str());
        for (const auto& m : r.missing())
          std::printf("                  MISSING snapshot %s (set %s, task %s, agent %s, component %s, made %s%s)\n",
                      terminal_safe(m.snapshot_id()).c_str(), terminal_safe(m.backup_set_id()).c_str(), terminal_safe(m.task_id()).c_str(),
                      terminal_safe(m.agent()).c_str(), terminal_safe(m.component()).c_str(), local_time(m.made_at()).c_str(),
                      m.copy() ? ", the controller's copy" : "");
        if (!r.error().empty())
          std::printf("                  the last try (%s) failed: %s\n", age(r.tried_at(), now).c_str(), terminal_safe(r.error()).c_str());
        if (!r.protection().empty())
          std::printf("                  store protection: %s%s\n", terminal_safe(r.protection()).c_str(),
                      r.protection_detail().empty() ? "" : (" (" + terminal_safe(r.protection_detail()) + ")").c_str());
      }
      return kExitOk;
    };
  });
}

}  // namespace cairn::ctl
