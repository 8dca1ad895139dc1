// Rendering of tasks and live progress.
#include "cairnctl/op_view.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "cairnctl/cli.h"
#include "common/util/terminal_text.h"
#include "proto/error_code.h"

namespace cairn::ctl {
namespace {

struct Rate {
  uint64_t bytes = 0;
  std::chrono::steady_clock::time_point at;
  double per_s = 0;
};

std::string task_line(const cairn::v1::TaskInfo& t, std::map<std::string, Rate>& rates) {
  const auto& p = t.progress();
  auto now = std::chrono::steady_clock::now();
  auto& r = rates[t.task_id()];
  if (r.at.time_since_epoch().count() != 0 && p.bytes_done() >= r.bytes) {
    double dt = std::chrono::duration<double>(now - r.at).count();
    // Smoothed, so one slow poll does not make the ETA jump.
    if (dt > 0.2) r.per_s = r.per_s == 0 ? (p.bytes_done() - r.bytes) / dt : 0.7 * r.per_s + 0.3 * (p.bytes_done() - r.bytes) / dt;
  }
  if (r.at.time_since_epoch().count() == 0 || std::chrono::duration<double>(now - r.at).count() > 0.2) {
    r.bytes = p.bytes_done();
    r.at = now;
  }
  std::string bytes = human_bytes(p.bytes_done());
  if (p.bytes_total()) bytes += "/" + human_bytes(p.bytes_total());
  std::string eta = "-";
  if (p.bytes_total() > p.bytes_done() && r.per_s > 0) eta = human_duration((p.bytes_total() - p.bytes_done()) / r.per_s);
  char line[512];
  // Names and ids come from agents and the catalog: shown escaped (common/util/encoding.h).
  std::snprintf(line, sizeof line, "%-20s %-28s %-8s %-10s %-10s %-22s %10s/s ETA %s", terminal_safe(t.task_id()).c_str(),
                terminal_safe(t.agent_name() + "/" + t.component()).c_str(),
                t.kind() == cairn::v1::TASK_KIND_RESTORE ? "restore"
                : t.kind() == cairn::v1::TASK_KIND_DRILL ? "drill"
                                                         : "backup",
                task_state_name(t.state()).c_str(), phase_name(p.phase()).c_str(), bytes.c_str(), human_bytes(uint64_t(r.per_s)).c_str(),
                eta.c_str());
  return line;
}

constexpr const char* kTableHeader = "%-20s %-28s %-8s %-10s %-10s %-22s";

void print_header(bool rate) {
  std::printf(kTableHeader, "TASK", "NODE/COMPONENT", "KIND", "STATE", "PHASE", "BYTES");
  std::printf(rate ? " %12s ETA\n" : "\n", "RATE");
}

}  // namespace

std::string local_time(int64_t t) {
  if (t <= 0) return "-";
  std::time_t tt = std::time_t(t);
  std::tm tm{};
  localtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string queued_note(const cairn::v1::TaskInfo& t) {
  bool waiting = t.state() == cairn::v1::TASK_STATE_PENDING || t.state() == cairn::v1::TASK_STATE_SENT;
  if (!waiting || t.agent_connected()) return {};
  std::string since = t.agent_last_seen() ? "since " + local_time(t.agent_last_seen()) : "(never connected)";
  return "queued: agent '" + terminal_safe(t.agent_name()) + "' not connected " + since + ", expires at " + local_time(t.plan_expires_at());
}

void print_offline_agents(const google::protobuf::RepeatedPtrField<cairn::v1::TaskInfo>& tasks) {
  std::set<std::string> names;
  int64_t expires = 0;
  for (const auto& t : tasks)
    if (!queued_note(t).empty()) {
      names.insert(terminal_safe(t.agent_name()));
      expires = std::max(expires, t.plan_expires_at());
    }
  if (names.empty()) return;
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "'" : ", '") + n + "'";
  std::printf(
      "not connected: %s; their tasks are queued until the agent connects or the plan expires at %s "
      "(use --require-connected to refuse instead)\n",
      list.c_str(), local_time(expires).c_str());
}

// A driver's metadata on one line: "key=value, ..." for the top-level
// entries; lists and objects in compact JSON, each cut at 120 characters.
std::string metadata_line(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) return terminal_safe(text.substr(0, 200));
  std::string out;
  for (const auto& [k, v] : j.items()) {
    std::string val = v.is_string() ? v.get<std::string>() : v.dump();
    if (val.size() > 120) val = val.substr(0, 117) + "...";
    out += (out.empty() ? "" : ", ") + k + "=" + val;
  }
  return terminal_safe(out);
}

std::string set_state_name(cairn::v1::SetState s) {
  switch (s) {
    case cairn::v1::SET_STATE_RUNNING:
      return "running";
    case cairn::v1::SET_STATE_COMPLETE:
      return "complete";
    case cairn::v1::SET_STATE_PARTIAL:
      return "partial";
    case cairn::v1::SET_STATE_FAILED:
      return "failed";
    default:
      return "unknown";
  }
}

std::string task_state_name(cairn::v1::TaskState s) {
  static const char* names[] = {"unknown", "pending",   "sent",    "accepted", "rejected",
                                "running", "succeeded", "partial", "failed",   "missed"};
  return int(s) >= 0 && int(s) < 10 ? names[int(s)] : "unknown";
}

std::string phase_name(cairn::v1::Phase p) {
  static const char* names[] = {"-",       "queued", "preflight", "snapshot", "stream", "verify",
                                "cleanup", "safety", "stop",      "restore",  "start"};
  return int(p) >= 0 && int(p) < 11 ? names[int(p)] : "-";
}

void print_tasks(const google::protobuf::RepeatedPtrField<cairn::v1::TaskInfo>& tasks) {
  std::map<std::string, Rate> rates;
  print_header(false);
  for (const auto& t : tasks) {
    std::string l = task_line(t, rates);
    // the final table leaves out the rate and ETA columns
    std::string cut = l.substr(0, 103);
    while (!cut.empty() && cut.back() == ' ') cut.pop_back();
    std::printf("%s\n", cut.c_str());
  }
  for (const auto& t : tasks)
    if (auto q = queued_note(t); !q.empty()) std::printf("  %s: %s\n", terminal_safe(t.task_id()).c_str(), q.c_str());
  for (const auto& t : tasks) {
    if (!t.snapshot_id().empty())
      std::printf("  %s: snapshot %s manifest %s\n", terminal_safe(t.task_id()).c_str(), terminal_safe(t.snapshot_id()).c_str(),
                  terminal_safe(t.manifest_digest().substr(0, 16)).c_str());
    if (!t.restore_step().empty() || !t.cluster_id().empty())
      std::printf("  %s: cluster '%s'%s\n", terminal_safe(t.task_id()).c_str(), terminal_safe(t.cluster_id()).c_str(),
                  t.restore_step().empty() ? "" : (", step " + terminal_safe(t.restore_step())).c_str());
    if (!t.component_metadata().empty())
      std::printf("  %s: recorded %s\n", terminal_safe(t.task_id()).c_str(), metadata_line(t.component_metadata()).c_str());
    if (t.storage_requests())
      std::printf("  %s: store: %llu requests, %llu retried\n", terminal_safe(t.task_id()).c_str(),
                  static_cast<unsigned long long>(t.storage_requests()), static_cast<unsigned long long>(t.storage_retries()));
    for (const auto& r : t.reasons())
      std::printf("  %s: %s: %s%s\n", terminal_safe(t.task_id()).c_str(), proto::error_code_name(r.code()).c_str(),
                  terminal_safe(r.detail()).c_str(), r.item().empty() ? "" : (" ('" + terminal_safe(r.item()) + "')").c_str());
  }
}

int wait_for(const OpOptions& o, const std::function<WaitView()>& fetch, const std::atomic<bool>& cancel) {
  bool tty = ::isatty(STDOUT_FILENO) && !o.json;
  std::map<std::string, Rate> rates;
  std::map<std::string, std::string> last_plain;  // task id -> state/phase last printed
  auto last_plain_at = std::chrono::steady_clock::now();
  size_t drawn = 0;
  bool header_printed = false;
  while (true) {
    WaitView v = fetch();
    bool done = v.state != cairn::v1::SET_STATE_RUNNING;
    if (tty) {
      // Redraw in place: move up over the previous drawing, clear each line.
      for (size_t i = 0; i < drawn; ++i) std::printf("\033[1A\033[2K");
      std::printf("%s: %s\n", terminal_safe(v.title).c_str(), set_state_name(v.state).c_str());
      print_header(true);
      drawn = size_t(v.tasks.size()) + 2;
      for (const auto& t : v.tasks) {
        std::printf("%s\n", task_line(t, rates).c_str());
        if (auto q = queued_note(t); !q.empty()) {
          std::printf("  %s\n", q.c_str());
          ++drawn;
        }
      }
    } else if (!o.json) {
      auto now = std::chrono::steady_clock::now();
      bool periodic = now - last_plain_at > std::chrono::seconds(10);
      if (!header_printed) print_header(true);
      header_printed = true;
      for (const auto& t : v.tasks) {
        std::string q = queued_note(t);
        std::string key = task_state_name(t.state()) + "/" + phase_name(t.progress().phase()) + "/" + q;
        if (last_plain[t.task_id()] != key || periodic) {
          last_plain[t.task_id()] = key;
          std::printf("%s\n", task_line(t, rates).c_str());
          if (!q.empty()) std::printf("  %s: %s\n", terminal_safe(t.task_id()).c_str(), q.c_str());
        }
      }
      if (periodic) last_plain_at = now;
    }
    std::fflush(stdout);
    if (done) {
      if (!o.json) {
        std::printf("%s: %s\n", terminal_safe(v.title).c_str(), set_state_name(v.state).c_str());
        for (const auto& t : v.tasks)
          for (const auto& r : t.reasons())
            std::printf("  %s %s/%s: %s: %s%s\n", terminal_safe(t.task_id()).c_str(), terminal_safe(t.agent_name()).c_str(),
                        terminal_safe(t.component()).c_str(), proto::error_code_name(r.code()).c_str(), terminal_safe(r.detail()).c_str(),
                        r.item().empty() ? "" : (" ('" + terminal_safe(r.item()) + "')").c_str());
      }
      return exit_code_for_state(v.state);
    }
    if (cancel) {
      std::fprintf(stderr, "cairnctl: stopped waiting; the work goes on (see '%s')\n", terminal_safe(v.title).c_str());
      return kExitError;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

}  // namespace cairn::ctl
