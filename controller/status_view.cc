// /metrics and the status page, rendered from the catalog (status_view.h).
#include "controller/status_view.h"

#include <map>

#include "cairn/version.h"
#include "common/repo/memory.h"
#include "common/util/terminal_text.h"
#include "controller/orders.h"
#include "controller/schedule.h"

namespace cairn::controller {
namespace {

std::string label_value(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string labels(std::initializer_list<std::pair<const char*, std::string>> l) {
  std::string out;
  for (const auto& [k, v] : l) out += std::string(out.empty() ? "{" : ",") + k + "=\"" + label_value(v) + "\"";
  return out.empty() ? out : out + "}";
}

class Metrics {
 public:
  void family(const char* name, const char* type, const char* help) {
    out_ += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  }
  void sample(const std::string& name, const std::string& lbl, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    out_ += name + lbl + " " + buf + "\n";
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

std::string utc(int64_t t) { return t ? format_local(t, cctz::utc_time_zone()) : "-"; }

std::string state_text(catalog::SetState s) { return std::string(catalog::to_string(s)); }

// A time in a policy's own zone, as its schedule reads.
std::string in_zone(int64_t t, const std::string& zone) {
  try {
    return format_local(t, load_time_zone(zone));
  } catch (const std::exception&) {
    return utc(t);
  }
}

// How long ago: "4 min ago", "3 h 12 min ago", "2 d 5 h ago".
std::string age_text(int64_t now, int64_t t) {
  int64_t s = std::max<int64_t>(0, now - t);
  char buf[64];
  if (s < 60)
    std::snprintf(buf, sizeof buf, "%lld s ago", (long long)s);
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%lld min ago", (long long)(s / 60));
  else if (s < 86400)
    std::snprintf(buf, sizeof buf, "%lld h %lld min ago", (long long)(s / 3600), (long long)(s % 3600 / 60));
  else
    std::snprintf(buf, sizeof buf, "%lld d %lld h ago", (long long)(s / 86400), (long long)(s % 86400 / 3600));
  return buf;
}

// The Verified cell of a repository's row: when, and each snapshot missing.
std::string verification_cell(const RepositoryVerification* v, int64_t now) {
  if (!v || (!v->verified_at && v->error.empty())) return "<td class=\"pending\">not yet</td>";
  std::string text, why, cls = "complete";
  if (v->verified_at)
    text =
        age_text(now, v->verified_at) + ": " + std::to_string(v->listed) + " snapshot(s) listed, " +
        (v->missing.empty() ? "all " + std::to_string(v->expected) + " the catalog holds there"
                            : std::to_string(v->missing.size()) + " of the " + std::to_string(v->expected) + " the catalog holds MISSING");
  else
    text = "never listed";
  if (!v->missing.empty()) {
    cls = "failed";
    for (const auto& m : v->missing) why += (why.empty() ? "missing: " : "; ") + missing_line(m);
  }
  if (!v->error.empty()) {
    if (v->missing.empty()) cls = "partial";
    why += (why.empty() ? "" : "; ") + std::string("the last try (") + age_text(now, v->tried_at) + ") failed: " + v->error;
  }
  return "<td class=\"" + cls + "\">" + html_escape(text) + (why.empty() ? "" : "<div class=\"why\">" + html_escape(why) + "</div>") +
         "</td>";
}

std::string join_lines(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& x : v) out += (out.empty() ? "" : "; ") + x;
  return out;
}

}  // namespace

std::string html_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string render_metrics(const StatusSources& s) {
  Metrics m;
  s.catalog.read([&](const catalog::Tx& tx) {
    auto stats = tx.backup_stats();
    // The label sets the backup counters start at 0 with: every one a task
    // ended with, every one a policy's run would make now, and every
    // approved agent's component backed up by hand (policy "").
    std::map<std::string, int64_t> known_backups;
    auto backup_labels = [](const std::string& policy, const std::string& component, const std::string& agent,
                            const std::string& repository) {
      return labels({{"policy", policy}, {"component", component}, {"agent", agent}, {"repository", repository}});
    };
    for (const auto& b : stats) known_backups[backup_labels(b.policy, b.component, b.agent, b.repository)] = 0;
    const auto every_component = backup_targets(tx, cairn::v1::Selector(), "");  // approved agents' components
    for (const auto& t : every_component) known_backups[backup_labels("", t.component, t.agent, t.repository)] = 0;
    for (const auto& p : tx.policies())
      for (const auto& t : backup_targets(tx, selector_from_json(p.selector), p.repository))
        known_backups[backup_labels(p.name, t.component, t.agent, t.repository)] = 0;
    struct Named {
      const char* name;
      const char* state;
      const char* help;
    };
    for (const Named& n : {Named{"cairn_backup_success_total", "succeeded", "Backup tasks that succeeded."},
                           Named{"cairn_backup_partial_total", "partial", "Backup tasks that ended partial (some items left out)."},
                           Named{"cairn_backup_failure_total", "", "Backup tasks that failed, were missed or rejected."}}) {
      m.family(n.name, "counter", n.help);
      std::map<std::string, int64_t> by = known_backups;  // every label set at 0 first: the first failure is an increase
      for (const auto& b : stats) {
        bool match = *n.state ? b.state == n.state : (b.state == "failed" || b.state == "missed" || b.state == "rejected");
        if (!match) continue;
        by[backup_labels(b.policy, b.component, b.agent, b.repository)] += b.count;
      }
      for (const auto& [l, v] : by) m.sample(n.name, l, double(v));
    }
    m.family("cairn_backup_last_success_timestamp_seconds", "gauge", "When the newest successful backup task ended (unix seconds).");
    for (const auto& b : stats)
      if (b.last_success_at)
        m.sample("cairn_backup_last_success_timestamp_seconds", backup_labels(b.policy, b.component, b.agent, b.repository),
                 double(*b.last_success_at));
    m.family("cairn_storage_requests_total", "counter",
             "Requests the agents' tasks sent to a repository's object store, since the controller started.");
    m.family("cairn_storage_retries_total", "counter",
             "Of those, tries again after a transient failure (503 SlowDown, a cut connection, a timeout).");
    for (const auto& [repository, c] : s.fleet.storage_counts()) {
      m.sample("cairn_storage_requests_total", labels({{"repository", repository}}), double(c.requests));
      m.sample("cairn_storage_retries_total", labels({{"repository", repository}}), double(c.retries));
    }
    m.family("cairn_backup_bytes", "gauge", "Bytes read by the newest successful backup task.");
    for (const auto& b : stats)
      if (b.last_bytes && b.state == "succeeded")
        m.sample("cairn_backup_bytes", backup_labels(b.policy, b.component, b.agent, b.repository), double(*b.last_bytes));
    m.family("cairn_backup_duration_seconds", "histogram", "How long ended backup tasks took, from order to outcome.");
    std::map<std::string, catalog::BackupStat> hist;
    for (const auto& b : stats) {
      auto key = labels({{"policy", b.policy}, {"component", b.component}, {"agent", b.agent}});
      auto& h = hist[key];
      h.policy = b.policy;
      h.component = b.component;
      h.agent = b.agent;
      h.count += b.count;
      h.duration_sum += b.duration_sum;
      for (int i = 0; i < 7; ++i) h.duration_le[i] += b.duration_le[i];
    }
    for (const auto& [key, h] : hist) {
      for (int i = 0; i < 7; ++i)
        m.sample("cairn_backup_duration_seconds_bucket",
                 labels({{"policy", h.policy},
                         {"component", h.component},
                         {"agent", h.agent},
                         {"le", std::to_string(catalog::BackupStat::kBuckets[i])}}),
                 double(h.duration_le[i]));
      m.sample("cairn_backup_duration_seconds_bucket",
               labels({{"policy", h.policy}, {"component", h.component}, {"agent", h.agent}, {"le", "+Inf"}}), double(h.count));
      m.sample("cairn_backup_duration_seconds_sum", key, double(h.duration_sum));
      m.sample("cairn_backup_duration_seconds_count", key, double(h.count));
    }
    m.family("cairn_snapshots", "gauge", "Snapshots the catalog holds that retention has not removed.");
    for (const auto& c : tx.snapshot_stats())
      m.sample("cairn_snapshots", labels({{"repository", c.labels[0]}, {"component", c.labels[1]}, {"agent", c.labels[2]}}),
               double(c.count));
    m.family("cairn_repository_size_bytes", "gauge",
             "Pack data of each repository the controller declares, as last measured (at start, after a prune, every 10 minutes, within 15 "
             "s of a backup ending).");
    for (const auto& r : s.repositories)
      if (auto size = s.maintenance.size_of(r)) m.sample("cairn_repository_size_bytes", labels({{"repository", r}}), double(*size));
    // What the controller's verification found (controller/verification.h).
    const auto verified = s.verifier ? s.verifier->states() : std::vector<RepositoryVerification>{};
    m.family("cairn_repository_snapshots_missing", "gauge",
             "Snapshots the catalog holds in the repository that its last verification did not find there (deleted "
             "behind the controller's back, or lost by the store); absent before the first verification.");
    for (const auto& v : verified)
      if (v.verified_at) m.sample("cairn_repository_snapshots_missing", labels({{"repository", v.repository}}), double(v.missing.size()));
    m.family("cairn_repository_verified_timestamp_seconds", "gauge",
             "When the controller last listed the repository's snapshots and compared them with the catalog (unix seconds).");
    for (const auto& v : verified)
      if (v.verified_at)
        m.sample("cairn_repository_verified_timestamp_seconds", labels({{"repository", v.repository}}), double(v.verified_at));
    m.family("cairn_repository_store_protection", "gauge",
             "1 for what protects the repository's objects from a credential that may write, as its store last said: "
             "state not_applicable (a filesystem), none, unknown, versioning, object_lock or create_only.");
    for (const auto& v : verified)
      if (v.protection_known)
        m.sample("cairn_repository_store_protection",
                 labels({{"repository", v.repository}, {"state", repo::protection_name(v.protection.state)}}), 1);
    // Retention that does not get done (a repository always locked or in
    // use, a prune that fails) shows as expired sets that grow old.
    auto expired = tx.expired_stats();
    auto expired_in = [&](const std::string& r) -> const catalog::ExpiredStat* {
      for (const auto& e : expired)
        if (e.repository == r) return &e;
      return nullptr;
    };
    m.family("cairn_backup_sets_expired", "gauge",
             "Backup sets retention expired whose snapshots in each declared repository are not yet removed.");
    for (const auto& r : s.repositories) {
      auto* e = expired_in(r);
      m.sample("cairn_backup_sets_expired", labels({{"repository", r}}), e ? double(e->sets) : 0);
    }
    m.family("cairn_backup_sets_expired_oldest_timestamp_seconds", "gauge", "When the oldest of those sets expired (unix seconds).");
    for (const auto& r : s.repositories)
      if (auto* e = expired_in(r))
        m.sample("cairn_backup_sets_expired_oldest_timestamp_seconds", labels({{"repository", r}}), double(e->oldest_expired_at));
    auto restores = tx.restore_stats();
    std::map<std::string, int64_t> known_restores;
    for (const auto& c : restores) known_restores[labels({{"component", c.labels[0]}, {"agent", c.labels[1]}})] = 0;
    for (const auto& t : every_component) known_restores[labels({{"component", t.component}, {"agent", t.agent}})] = 0;
    for (const Named& n :
         {Named{"cairn_restore_success_total", "succeeded", "Restore tasks that succeeded."},
          Named{"cairn_restore_failure_total", "", "Restore tasks that failed, ended partial, were missed or rejected."}}) {
      m.family(n.name, "counter", n.help);
      std::map<std::string, int64_t> by = known_restores;  // at 0 first, as the backup counters
      for (const auto& c : restores) {
        bool ok = c.labels[2] == "succeeded";
        if (*n.state ? !ok : ok) continue;
        by[labels({{"component", c.labels[0]}, {"agent", c.labels[1]}})] += c.count;
      }
      for (const auto& [l, v] : by) m.sample(n.name, l, double(v));
    }
    // Continuous WAL archives (docs/postgresql.md § Watching the archive).
    const auto wal = s.fleet.wal_archives();
    m.family("cairn_wal_last_archived_timestamp_seconds", "gauge",
             "When the agent last stored a WAL file of the component in the repository (unix seconds; 0: none since "
             "the agent started).");
    m.family("cairn_wal_pending_files", "gauge",
             "WAL files the server waits to hand to the agent (archive_status/*.ready): the archive's lag.");
    m.family("cairn_wal_archive_failures_total", "counter", "WAL hand-overs the agent refused or could not store since it started.");
    m.family("cairn_wal_archive_failing", "gauge",
             "1 while the archive's newest event is a failure (a hand-over refused or not stored, or its agent not "
             "connected: nothing is archived then), else 0.");
    m.family("cairn_wal_archive_gap_segments", "gauge",
             "WAL segments missing from the repository while a later one of the timeline is there, as the agent's "
             "last check found (0 when none): recovery cannot pass them.");
    m.family("cairn_wal_archive_checked_timestamp_seconds", "gauge",
             "When the agent last checked the repository's WAL for gaps (unix seconds; 0: not yet).");
    for (const auto& [key, w] : wal) {
      auto agent = tx.agent(key.first);
      const std::string who = agent ? agent->name : key.first;
      std::string l = labels({{"component", key.second}, {"agent", who}});
      m.sample("cairn_wal_last_archived_timestamp_seconds", l, double(w.last_archived_at()));
      m.sample("cairn_wal_pending_files", l, double(w.pending()));
      m.sample("cairn_wal_archive_failures_total", l, double(w.failures()));
      m.sample("cairn_wal_archive_checked_timestamp_seconds", l, double(w.checked_at()));
      m.sample("cairn_wal_archive_failing", l, w.last_error_at() > w.last_archived_at() ? 1 : 0);
      std::map<uint32_t, uint64_t> missing;
      for (const auto& g : w.gaps()) missing[g.timeline()] += g.missing();
      if (missing.empty())
        m.sample("cairn_wal_archive_gap_segments", labels({{"component", key.second}, {"agent", who}, {"timeline", "all"}}), 0);
      for (const auto& [tli, n] : missing)
        m.sample("cairn_wal_archive_gap_segments", labels({{"component", key.second}, {"agent", who}, {"timeline", std::to_string(tli)}}),
                 double(n));
    }
    // What in-place restores set aside on the agents' disks (docs/set-aside.md).
    m.family("cairn_restore_set_aside_bytes", "gauge",
             "Bytes of the copies in-place restores set aside beside the component's data on the agent "
             "(<path>.cairn-old-*, .cairn-failed-*, working dirs), as its last heartbeat reported.");
    m.family("cairn_restore_set_aside_copies", "gauge", "Copies in-place restores set aside beside the component's data.");
    m.family("cairn_restore_set_aside_only_copies", "gauge",
             "Set-aside copies kept because the repository does not hold their data (a skipped, empty or pruned safety "
             "backup, or a copy no recorded restore made): removing one loses data.");
    for (const auto& [agent_id, list] : s.fleet.set_aside()) {
      auto agent = tx.agent(agent_id);
      const std::string who = agent ? agent->name : agent_id;
      struct Sum {
        uint64_t bytes = 0, copies = 0, only = 0;
      };
      std::map<std::string, Sum> by;
      for (const auto& t : every_component)
        if (t.agent == who) by[t.component];
      for (const auto& c : list) {
        auto& x = by[c.component()];
        x.bytes += c.bytes();
        ++x.copies;
        if (c.keep() == "only-copy" || c.keep() == "unrecorded") ++x.only;
      }
      for (const auto& [comp, x] : by) {
        std::string l = labels({{"component", comp}, {"agent", who}});
        m.sample("cairn_restore_set_aside_bytes", l, double(x.bytes));
        m.sample("cairn_restore_set_aside_copies", l, double(x.copies));
        m.sample("cairn_restore_set_aside_only_copies", l, double(x.only));
      }
    }
    auto drills = tx.drill_stats();
    m.family("cairn_component_proven_restorable_timestamp_seconds", "gauge",
             "When a drill last proved a backup of the component restorable (unix seconds; docs/drills.md).");
    for (const auto& d : drills)
      if (d.last_proven_at)
        m.sample("cairn_component_proven_restorable_timestamp_seconds", labels({{"component", d.component}}), double(*d.last_proven_at));
    m.family("cairn_drill_total", "counter",
             "Drill tasks that ended, by outcome: proven, failed (the backup did not restore or check out), not_run "
             "(the drill could not run: it proves nothing about the backup).");
    for (const auto& d : drills) {
      m.sample("cairn_drill_total", labels({{"component", d.component}, {"outcome", "proven"}}), double(d.proven));
      m.sample("cairn_drill_total", labels({{"component", d.component}, {"outcome", "failed"}}), double(d.failed));
      m.sample("cairn_drill_total", labels({{"component", d.component}, {"outcome", "not_run"}}), double(d.not_run));
    }
    m.family("cairn_drill_duration_seconds", "gauge",
             "The newest proving drill's phases (restore, start, check): the measured restore time.");
    for (const auto& d : drills) {
      if (!d.last_metadata.is_object() || !d.last_metadata.contains("drill")) continue;
      const auto& drill = d.last_metadata["drill"];
      if (!drill.is_object() || !drill.contains("phases") || !drill["phases"].is_object()) continue;
      for (const auto& [phase, secs] : drill["phases"].items())
        if (secs.is_number())
          m.sample("cairn_drill_duration_seconds", labels({{"component", d.component}, {"phase", phase}}), secs.get<double>());
    }
    // Offsite copies (a policy's copy_to; docs/operations.md § Offsite copies).
    auto copies = tx.copy_stats();
    m.family("cairn_set_copies", "gauge",
             "Backup sets by the state of their copy to a policy's copy_to repository: copied, pending, failed (retried).");
    for (const auto& c : copies)
      for (const auto& [state, n] : {std::pair{"copied", c.copied}, {"pending", c.pending}, {"failed", c.failed}})
        m.sample("cairn_set_copies", labels({{"repository", c.repository}, {"state", state}}), double(n));
    m.family("cairn_set_copy_last_success_timestamp_seconds", "gauge",
             "When the newest copy of a set to the repository ended (unix seconds).");
    for (const auto& c : copies)
      if (c.last_copied_at)
        m.sample("cairn_set_copy_last_success_timestamp_seconds", labels({{"repository", c.repository}}), double(*c.last_copied_at));
    m.family("cairn_agents", "gauge", "Agents by state: pending, connected, disconnected (approved ones), revoked.");
    std::map<std::string, int64_t> agents = {{"pending", 0}, {"connected", 0}, {"disconnected", 0}, {"revoked", 0}};
    for (const auto& a : tx.agents()) {
      if (a.state == catalog::AgentState::approved)
        agents[s.fleet.connected(a.id) ? "connected" : "disconnected"]++;
      else
        agents[a.state == catalog::AgentState::pending ? "pending" : "revoked"]++;
    }
    for (const auto& [state, n] : agents) m.sample("cairn_agents", labels({{"state", state}}), double(n));
    m.family("cairn_audit_outbox_events", "gauge", "Audit events not yet published to Kafka.");
    m.sample("cairn_audit_outbox_events", "", double(tx.audit_outbox_pending()));
    if (s.publisher) {
      auto ps = s.publisher->status();
      m.family("cairn_audit_topic_problem", "gauge",
               "1 while the audit topic holds records this controller did not write, or lost events Kafka had "
               "acknowledged (cairnctl status says which).");
      m.sample("cairn_audit_topic_problem", "", ps.topic_problem.empty() ? 0.0 : 1.0);
      m.family("cairn_audit_topic_foreign_records_total", "counter",
               "Records read at the audit topic's end that this controller did not write.");
      m.sample("cairn_audit_topic_foreign_records_total", "", double(ps.foreign_records));
      m.family("cairn_audit_topic_rewinds_total", "counter",
               "Times the audit topic had lost events Kafka had acknowledged (they were sent again).");
      m.sample("cairn_audit_topic_rewinds_total", "", double(ps.rewinds));
      m.family("cairn_audit_last_checkpoint_timestamp_seconds", "gauge",
               "When Kafka acknowledged the newest signed checkpoint (0: none since the controller started).");
      m.sample("cairn_audit_last_checkpoint_timestamp_seconds", "", double(ps.last_checkpoint_unix));
    }
    m.family("cairn_policy_next_run_timestamp_seconds", "gauge", "When each unpaused policy runs next (unix seconds).");
    for (const auto& p : tx.policies())
      if (p.next_run_at) m.sample("cairn_policy_next_run_timestamp_seconds", labels({{"policy", p.name}}), double(*p.next_run_at));
    m.family("cairn_policy_last_run_started", "gauge",
             "1 when the policy's last run started a backup set, 0 when it was refused or skipped (its reason names "
             "what blocked it: 'cairnctl policy show').");
    for (const auto& p : tx.policies()) {
      auto runs = tx.policy_runs(p.name, 1);
      if (!runs.empty()) m.sample("cairn_policy_last_run_started", labels({{"policy", p.name}}), runs[0].outcome == "started" ? 1 : 0);
    }
    m.family("cairn_policy_paused", "gauge", "1 for a paused policy.");
    for (const auto& p : tx.policies()) m.sample("cairn_policy_paused", labels({{"policy", p.name}}), p.paused ? 1 : 0);
    m.family("cairn_backup_sets_running", "gauge", "Backup sets not yet ended.");
    m.sample("cairn_backup_sets_running", "", double(tx.running_backup_sets()));
  });
  return m.take();
}

std::string render_status_page(const StatusSources& s, const std::string& controller_id) {
  std::string h;
  h += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>cairn: " + html_escape(controller_id) +
       "</title>\n<meta http-equiv=\"refresh\" content=\"10\">\n<style>"
       "body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin-bottom:1.5em}"
       "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}th{background:#f0f0f0}"
       ".complete,.succeeded,.connected,.started{color:#176d2a}.failed,.refused,.disconnected{color:#a11;font-weight:bold}"
       ".partial,.skipped,.pending,.running{color:#9a6000}.why{font-size:90%;color:#555}"
       "</style></head><body>\n";
  h += "<h1>cairn controller " + html_escape(controller_id) + "</h1>\n<p>version " CAIRN_VERSION ", page made " +
       html_escape(utc(s.catalog.read([](const catalog::Tx& tx) { return tx.now(); }))) + " (it reloads every 10 s)</p>\n";
  s.catalog.read([&](const catalog::Tx& tx) {
    // Reasons name the node they happened on (issue 32): "etcd on node-2: ...".
    std::map<std::string, std::string> names;
    for (const auto& a : tx.agents()) names[a.id] = a.name;
    auto where = [&](const catalog::Task& t) {
      auto it = names.find(t.agent_id);
      return t.component + " on " + (it == names.end() ? t.agent_id : it->second);
    };
    // What an on-call operator asks first (docs/drills.md).
    // Ages, not times: the newest good backup's age is the data an outage
    // would cost now. The time itself is in the cell's title.
    h += "<h2 id=\"components\">Components</h2>\n<table><tr><th>Component</th><th>Where</th><th>Newest backup</th>"
         "<th>Proven restorable</th><th>Measured RTO</th></tr>\n";
    const int64_t now = tx.now();
    auto health = tx.component_health();
    for (const auto& c : health) {
      std::string backup = c.newest_backup_at ? age_text(now, *c.newest_backup_at) : "never";
      std::string backup_cls = c.newest_backup_at ? "complete" : "pending";
      std::string backup_why;
      if (!c.newest_backup_failure.empty()) {
        backup_cls = "failed";
        backup_why = "the newest backup " + first_line(c.newest_backup_failure) + " (" + age_text(now, c.newest_backup_failed_at) + ")";
        backup = c.newest_backup_at ? "last good " + backup : "none good";
      }
      std::string proven = c.proven_at ? age_text(now, *c.proven_at) : "never";
      std::string cls = c.proven_at ? "complete" : "pending";
      std::string why;
      if (!c.last_drill_failure.empty()) {
        cls = "failed";
        why = "the newest drill FAILED: " + first_line(c.last_drill_failure) + " ('cairnctl drill list')";
      } else if (!c.last_drill_not_run.empty()) {
        if (cls == "complete") cls = "partial";
        why = "the last drill could not run, which proves nothing about the backup: " + first_line(c.last_drill_not_run);
      }
      char rto[32] = "-";
      if (c.proven_at) std::snprintf(rto, sizeof rto, "%.1f s", c.rto_seconds);
      auto cell = [](const std::string& klass, const std::string& title, const std::string& text, const std::string& why) {
        return "<td class=\"" + klass + "\"" + (title.empty() ? "" : " title=\"" + html_escape(title) + "\"") + ">" + html_escape(text) +
               (why.empty() ? "" : "<div class=\"why\">" + html_escape(why) + "</div>") + "</td>";
      };
      h += "<tr><td>" + html_escape(c.component) + "</td><td>" + html_escape(c.where) + "</td>" +
           cell(backup_cls, c.newest_backup_at ? utc(*c.newest_backup_at) : "", backup, backup_why) +
           cell(cls, c.proven_at ? utc(*c.proven_at) : "", proven, why) + "<td>" + rto + "</td></tr>\n";
    }
    if (health.empty()) h += "<tr><td colspan=\"5\">no backup yet</td></tr>\n";
    h += "</table>\n";
    // Continuous WAL archives: their age is what an outage of the database
    // would lose now (docs/postgresql.md § Watching the archive).
    const auto wal = s.fleet.wal_archives();
    if (!wal.empty()) {
      h += "<h2 id=\"wal\">WAL archives</h2>\n<table><tr><th>Component</th><th>Where</th><th>Newest WAL stored</th>"
           "<th>Waiting</th><th>Last failure</th><th>Gaps</th></tr>\n";
      for (const auto& [key, w] : wal) {
        auto it = names.find(key.first);
        bool failing = w.last_error_at() > w.last_archived_at();
        h += "<tr><td>" + html_escape(key.second) + "</td><td>" + html_escape(it == names.end() ? key.first : it->second) + "</td><td>" +
             html_escape(w.last_archived().empty() ? "none since the agent started"
                                                   : w.last_archived() + " at " + utc(w.last_archived_at())) +
             "</td><td class=\"" + (w.pending() > 1 ? "failed" : "complete") + "\">" + std::to_string(w.pending()) +
             " file(s)</td><td class=\"" + (failing ? "failed" : "complete") + "\">" +
             html_escape(w.last_error().empty() ? "-" : utc(w.last_error_at()) + ": " + w.last_error()) + "</td><td class=\"" +
             (w.gaps_size() ? "failed" : "complete") + "\">" +
             html_escape(w.checked_at() == 0 && w.check_error().empty() ? std::string("not checked yet")
                         : wal_gap_lines(w).empty()                     ? std::string("none")
                                                                        : join_lines(wal_gap_lines(w))) +
             "</td></tr>\n";
      }
      h += "</table>\n";
    }
    // What restores set aside on the agents' disks (docs/set-aside.md).
    {
      std::string rows;
      for (const auto& [agent_id, list] : s.fleet.set_aside()) {
        auto it = names.find(agent_id);
        for (const auto& c : list)
          rows += "<tr><td>" + html_escape(c.component()) + "</td><td>" + html_escape(it == names.end() ? agent_id : it->second) +
                  "</td><td>" + html_escape(c.path()) + "</td><td>" + html_escape(repo::byte_size_text(c.bytes())) + "</td><td>" +
                  html_escape(utc(c.at())) + "</td><td>" + html_escape(c.restore_id().empty() ? "-" : c.restore_id()) +
                  "</td><td class=\"" + (c.keep() == "only-copy" || c.keep() == "unrecorded" ? "failed" : "complete") + "\">" +
                  html_escape(c.keep().empty() ? "removed at the next look" : c.keep()) + "</td></tr>\n";
      }
      if (!rows.empty())
        h += "<h2 id=\"set-aside\">Set aside by restores</h2>\n<table><tr><th>Component</th><th>Where</th><th>Copy</th>"
             "<th>Size</th><th>Set aside</th><th>Restore</th><th>Kept because</th></tr>\n" +
             rows + "</table>\n";
    }
    // Offsite copies: a set not copied yet is one the site's loss would take.
    const auto copies = tx.copy_stats();
    if (!copies.empty()) {
      h += "<h2 id=\"copies\">Offsite copies</h2>\n<table><tr><th>Repository</th><th>Newest copy</th><th>Copied</th>"
           "<th>Pending</th><th>Failed (retried)</th></tr>\n";
      for (const auto& c : copies)
        h += "<tr><td>" + html_escape(c.repository) + "</td><td>" + html_escape(c.last_copied_at ? utc(*c.last_copied_at) : "none yet") +
             "</td><td>" + std::to_string(c.copied) + "</td><td class=\"" + (c.pending ? "pending" : "complete") + "\">" +
             std::to_string(c.pending) +
             html_escape(c.copying ? " (copying " + c.copying->set_id + ": " + std::to_string(c.copying->snapshots) + " of " +
                                         std::to_string(c.copying->snapshots_total) + " snapshot(s), " +
                                         repo::byte_size_text(uint64_t(c.copying->bytes), repo::ByteText::tenths) + " of " +
                                         repo::byte_size_text(uint64_t(c.copying->bytes_total), repo::ByteText::tenths) + ")"
                                   : std::string()) +
             "</td><td class=\"" + (c.failed ? "failed" : "complete") + "\">" + std::to_string(c.failed) +
             html_escape(c.failed && !c.last_failure.empty() ? ": " + c.last_failure : "") + "</td></tr>\n";
      h += "</table>\n";
    }
    h += "<h2 id=\"agents\">Agents</h2>\n<table><tr><th>Agent</th><th>State</th><th>Last seen</th><th>Components</th></tr>\n";
    for (const auto& a : tx.agents()) {
      std::string state = a.state == catalog::AgentState::approved ? (s.fleet.connected(a.id) ? "connected" : "disconnected")
                                                                   : std::string(to_string(a.state));
      std::string comps;
      for (const auto& c : tx.agent_components(a.id)) comps += (comps.empty() ? "" : ", ") + c.name + " (" + c.driver + ")";
      h += "<tr><td>" + html_escape(a.name) + "</td><td class=\"" + state + "\">" + state + "</td><td>" +
           html_escape(utc(a.last_seen_at.value_or(0))) + "</td><td>" + html_escape(comps) + "</td></tr>\n";
    }
    if (names.empty()) h += "<tr><td colspan=\"4\">none yet (agents appear when they first connect)</td></tr>\n";
    h += "</table>\n<h2 id=\"policies\">Policies</h2>\n<table><tr><th>Policy</th><th>Schedule</th><th>Last run</th>"
         "<th>Next run</th></tr>\n";
    for (const auto& p : tx.policies()) {
      auto runs = tx.policy_runs(p.name, 1);
      std::string last = "never";
      std::string cls;
      if (!runs.empty()) {
        const auto& r = runs[0];
        cls = r.outcome;
        last = utc(r.at) + " " + r.outcome;
        if (r.backup_set_id) {
          auto set = tx.backup_set(*r.backup_set_id);
          if (set) {
            cls = state_text(set->state);
            last += ": " + *r.backup_set_id + " " + state_text(set->state);
          }
        }
        if (!r.reason.empty()) last += " (" + r.reason + ")";
      }
      h += "<tr><td>" + html_escape(p.name) + "</td><td>" + html_escape(p.schedule + " " + p.time_zone) + "</td><td class=\"" +
           html_escape(cls) + "\">" + html_escape(last) + "</td><td>" +
           html_escape(p.paused        ? "paused"
                       : p.next_run_at ? in_zone(*p.next_run_at, p.time_zone)
                                       : "-") +
           "</td></tr>\n";
    }
    if (tx.policies().empty()) h += "<tr><td colspan=\"4\">none defined ('cairnctl policy add')</td></tr>\n";
    h += "</table>\n<h2 id=\"backups\">Recent backup sets</h2>\n<table><tr><th>Set</th><th>Started</th><th>Policy</th>"
         "<th>Outcome</th><th>Reasons</th></tr>\n";
    for (const auto& b : tx.backup_sets(20)) {
      std::string why;
      for (const auto& t : tx.tasks_of_set(b.id))
        for (const auto& r : t.reasons) why += (why.empty() ? "" : "; ") + where(t) + ": " + r.detail;
      std::string state = state_text(b.state);
      if (b.forgotten_at)
        state += " (forgotten)";
      else if (b.expired_at)
        state += " (expired)";
      h += "<tr><td>" + html_escape(b.id) + "</td><td>" + html_escape(utc(b.created_at)) + "</td><td>" +
           html_escape(b.trigger == "safety" ? "safety backup" : b.policy.value_or("-")) + "</td><td class=\"" + state_text(b.state) +
           "\">" + html_escape(state) + "</td><td class=\"why\">" + html_escape(why) + "</td></tr>\n";
    }
    if (tx.backup_sets(1).empty()) h += "<tr><td colspan=\"5\">none yet</td></tr>\n";
    h += "</table>\n<h2 id=\"restores\">Recent restores</h2>\n<table><tr><th>Restore</th><th>From set</th><th>Started</th>"
         "<th>Outcome</th><th>Reasons</th></tr>\n";
    for (const auto& r : tx.restores(10)) {
      std::string why;
      for (const auto& t : tx.tasks_of_restore(r.id))
        for (const auto& x : t.reasons) why += (why.empty() ? "" : "; ") + where(t) + ": " + x.detail;
      h += "<tr><td>" + html_escape(r.id) + "</td><td>" + html_escape(r.source_set_id) + "</td><td>" + html_escape(utc(r.created_at)) +
           "</td><td class=\"" + state_text(r.state) + "\">" + state_text(r.state) + "</td><td class=\"why\">" + html_escape(why) +
           "</td></tr>\n";
    }
    if (tx.restores(1).empty()) h += "<tr><td colspan=\"5\">none yet</td></tr>\n";
    h += "</table>\n<h2 id=\"repositories\">Repositories</h2>\n<table><tr><th>Repository</th><th>Pack data</th>"
         "<th>Verified</th><th>Store</th></tr>\n";
    const auto verified = s.verifier ? s.verifier->states() : std::vector<RepositoryVerification>{};
    for (const auto& r : s.repositories) {
      auto size = s.maintenance.size_of(r);
      const RepositoryVerification* v = nullptr;
      for (const auto& x : verified)
        if (x.repository == r) v = &x;
      h += "<tr><td>" + html_escape(r) + "</td><td>" +
           (size ? std::to_string(*size / (1024 * 1024)) + " MiB (" + std::to_string(*size) + " bytes)" : std::string("not measured yet")) +
           "</td>" + verification_cell(v, now) + "<td>" +
           html_escape(v && v->protection_known ? protection_line(v->protection) : std::string("not asked yet")) + "</td></tr>\n";
    }
    if (s.repositories.empty()) h += "<tr><td colspan=\"4\">none declared in the controller's configuration ([[repository]])</td></tr>\n";
    h += "</table>\n";
    if (s.publisher) {
      auto ps = s.publisher->status();
      // Without a publisher nothing is "not yet published": the catalog is where the trail lives.
      h += "<h2 id=\"audit\">Audit trail</h2>\n<p>" +
           html_escape(ps.enabled ? (ps.connected ? "published to Kafka" : "waiting for Kafka: " + ps.last_error) + "; " +
                                        std::to_string(tx.audit_outbox_pending()) + " event(s) not yet published"
                                  : std::string("kept in the controller's catalog (no [audit.kafka] publisher configured)")) +
           "</p>\n";
      if (!ps.topic_problem.empty()) h += "<p><b>Problem:</b> " + html_escape(ps.topic_problem) + "</p>\n";
    }
  });
  h += "</body></html>\n";
  return h;
}

}  // namespace cairn::controller
