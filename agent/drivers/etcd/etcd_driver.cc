#include "agent/drivers/etcd/etcd_driver.h"

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <thread>

#include "agent/platform/process.h"
#include "common/repo/snapshot.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::etcd {

using cairn::v1::Reason;
namespace fs = std::filesystem;

EtcdDriver::EtcdDriver(std::string component, Settings settings) : component_(std::move(component)), settings_(std::move(settings)) {}

ClientOptions EtcdDriver::client_options(const std::string& endpoint) const {
  ClientOptions o;
  o.endpoint = endpoint.empty() ? settings_.endpoint : endpoint;
  o.ca_file = settings_.ca_file;
  o.cert_file = settings_.cert_file;
  o.key_file = settings_.key_file;
  o.timeout = std::chrono::seconds(settings_.timeout_seconds);
  if (!settings_.auth_file.empty()) std::tie(o.user, o.password) = read_auth_file(settings_.auth_file);
  return o;
}

namespace {
// Where the ids a member last reported are kept, beside its data dir, so an
// agent that starts while etcd is down still names its cluster and member
// (the controller groups members by them).
std::string ids_file(const std::string& data_dir) {
  std::filesystem::path p(data_dir);
  return (p.parent_path() / ("." + p.filename().string() + ".cairn-ids.json")).string();
}
}  // namespace

void EtcdDriver::remember_ids(const MemberStatus& st) const {
  std::string cid = id_hex(st.cluster_id), mid = id_hex(st.member_id);
  {
    std::lock_guard lk(mu_);
    if (cid == seen_cluster_id_ && mid == seen_member_id_) return;
    seen_cluster_id_ = cid;
    seen_member_id_ = mid;
  }
  try {
    std::string text = nlohmann::json{{"cluster_id", cid}, {"member_id", mid}}.dump() + "\n";
    write_file_atomic(ids_file(settings_.data_dir), std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()),
                      0644);
  } catch (const std::exception&) {
    // Only a convenience for the next start while etcd is down.
  }
}

void EtcdDriver::learn_ids() const {
  try {
    ClientOptions o = client_options();
    o.timeout = std::chrono::milliseconds(2000);
    Client c(o);
    remember_ids(c.status());
    return;
  } catch (const std::exception&) {
  }
  try {
    Bytes b = read_file(ids_file(settings_.data_dir), 4096);
    auto j = nlohmann::json::parse(std::string(b.begin(), b.end()));
    std::lock_guard lk(mu_);
    seen_cluster_id_ = j.at("cluster_id").get<std::string>();
    seen_member_id_ = j.at("member_id").get<std::string>();
  } catch (const std::exception&) {
  }
}

DriverCaps EtcdDriver::capabilities() const {
  DriverCaps c;
  c.scope = "cluster";
  c.restore_stops_service = true;
  c.safety_backup = true;
  bool known;
  {
    std::lock_guard lk(mu_);
    known = !seen_cluster_id_.empty();
  }
  // Declared ids need no answer; otherwise the member is asked once (and
  // again after each task, which remembers what it saw).
  if (!known && (settings_.cluster_id.empty() || settings_.member_id.empty())) learn_ids();
  {
    std::lock_guard lk(mu_);
    c.cluster_id = settings_.cluster_id.empty() ? seen_cluster_id_ : settings_.cluster_id;
    c.member_id = settings_.member_id.empty() ? seen_member_id_ : settings_.member_id;
  }
  return c;
}

std::vector<std::string> EtcdDriver::config_warnings() const {
  std::vector<std::string> w;
  auto missing = [&](const std::string& path, const char* key) {
    if (!path.empty() && ::access(path.c_str(), F_OK) != 0)
      w.push_back("component '" + component_ + "': '" + key + "' " + path + " does not exist");
  };
  missing(settings_.ca_file, "ca_file");
  missing(settings_.cert_file, "cert_file");
  missing(settings_.key_file, "key_file");
  missing(settings_.auth_file, "auth_file");
  missing(settings_.data_dir, "data_dir");
  if (settings_.service.empty()) w.push_back("component '" + component_ + "': no 'service' declared: restores are refused");
  return w;
}

namespace {

uint64_t file_size_or_zero(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? uint64_t(st.st_size) : 0;
}

nlohmann::json member_json(const Member& m) {
  return {{"id", id_hex(m.id)}, {"name", m.name}, {"peer_urls", m.peer_urls}, {"client_urls", m.client_urls}, {"is_learner", m.is_learner}};
}

}  // namespace

std::vector<Reason> EtcdDriver::preflight(const cairn::v1::Task& task) const {
  std::vector<Reason> out;
  auto refuse = [&](const std::string& detail) { out.push_back(make_reason(cairn::v1::ERROR_CODE_PREFLIGHT_FAILED, detail, component_)); };
  if (task.kind() == cairn::v1::TASK_KIND_BACKUP) {
    try {
      Client c(client_options());
      MemberStatus st = c.status();
      remember_ids(st);
      if (st.is_learner) refuse("etcd member at '" + settings_.endpoint + "' is a learner; back up a voting member");
    } catch (const Error& e) {
      refuse(e.what());
    }
    return out;
  }
  if (task.kind() != cairn::v1::TASK_KIND_RESTORE) return out;
  if (!task.options().restore_target().empty())
    refuse("etcd restores only in place; restore target '" + task.options().restore_target() + "' is not declared");
  auto parsed = proto::restore_step_from_name(task.options().restore_step());
  if (!parsed) {
    refuse("unknown restore step '" + task.options().restore_step() + "'");
    return out;
  }
  RestoreStep step = *parsed;
  bool needs_service = step == v1::RESTORE_STEP_ALL || step == v1::RESTORE_STEP_PREFLIGHT || step == v1::RESTORE_STEP_STOP ||
                       step == v1::RESTORE_STEP_HALT || step == v1::RESTORE_STEP_START || step == v1::RESTORE_STEP_ROLLBACK;
  if (needs_service && settings_.service.empty())
    refuse("component '" + component_ +
           "' declares no 'service': cairn cannot stop and start etcd; declare "
           "'service' (a systemd unit, or start_command and stop_command)");
  else if (needs_service)
    if (auto p = platform::Service(settings_.service).problem(platform::ServiceUse::stop_start); !p.empty())
      refuse("a restore stops and starts etcd, but " + p);
  if (step == v1::RESTORE_STEP_ALL || step == v1::RESTORE_STEP_DATA) {
    if (!platform::find_program(settings_.etcdctl))
      refuse("'" + settings_.etcdctl + "' (setting 'etcdctl') is not found or not executable; install etcd-client");
    std::string parent = fs::path(settings_.data_dir).parent_path().string();
    if (::access(parent.c_str(), W_OK) != 0)
      refuse("the directory of 'data_dir', " + parent +
             ", is not writable by the agent: the new data dir is "
             "made beside the old one");
    // Room for the snapshot file and the new data dir, each about the size of the current database.
    uint64_t db = file_size_or_zero(settings_.data_dir + "/member/snap/db");
    struct statvfs sv {};
    if (db && ::statvfs(parent.c_str(), &sv) == 0) {
      uint64_t free_bytes = uint64_t(sv.f_bavail) * sv.f_frsize;
      if (free_bytes < 2 * db)
        refuse("not enough space in " + parent + ": " + std::to_string(free_bytes >> 20) + " MiB free, about " +
               std::to_string((2 * db) >> 20) + " MiB needed (the snapshot and a new data dir)");
    }
  }
  return out;
}

void EtcdDriver::snapshot(TaskContext& ctx, SnapshotSink& sink, const SnapshotPurpose& purpose) {
  auto progress = [&](cairn::v1::Phase ph, uint64_t done, uint64_t total) {
    if (ctx.progress) ctx.progress(WorkProgress{ph, done, total, 0, 0, kSnapshotFileName});
  };
  progress(cairn::v1::PHASE_SNAPSHOT, 0, 0);
  auto client = std::make_shared<Client>(client_options());
  MemberStatus st;
  try {
    st = client->status();
  } catch (const Error& e) {
    // The safety backup of a cluster restore's data step runs with etcd
    // stopped (step stop came first): the data dir of a stopped member is
    // consistent, so it is saved as it is.
    if (purpose.safety && ::access((settings_.data_dir + "/member").c_str(), F_OK) == 0) {
      if (ctx.note)
        ctx.note("etcd at '" + settings_.endpoint + "' does not answer (" + e.what() + "); the safety backup saves '" + settings_.data_dir +
                 "' as it is on disk");
      sink.add_path(settings_.data_dir);
      sink.set_metadata({{"kind", "data_dir"}, {"data_dir", settings_.data_dir}, {"name", settings_.name}});
      return;
    }
    // An empty host (a replaced disk, a lost site): etcd does not run and
    // its data dir holds no member. There is nothing to save, and saying so
    // is no failure: the restore puts the first data there.
    if (purpose.safety && ::access((settings_.data_dir + "/member").c_str(), F_OK) != 0 && errno == ENOENT) {
      if (ctx.note)
        ctx.note("etcd at '" + settings_.endpoint + "' does not answer (" + e.what() + ") and '" + settings_.data_dir +
                 "' holds no member data: nothing to save (an empty host)");
      return;
    }
    throw;
  }
  remember_ids(st);
  std::vector<Member> members = client->members();
  int64_t key_count = client->count_keys(st.revision);
  KvHash kvh = client->hash_kv(st.revision);

  auto meta = std::make_shared<nlohmann::json>(nlohmann::json{
      {"kind", "snapshot"},
      {"etcd_version", st.version},
      {"endpoint", settings_.endpoint},
      {"cluster_id", id_hex(st.cluster_id)},
      {"member_id", id_hex(st.member_id)},
      {"leader", id_hex(st.leader)},
      {"raft_term", st.raft_term},
      {"raft_index", st.raft_index},
      {"revision", st.revision},
      {"key_count", key_count},
      {"hash_kv", kvh.hash},
      {"compact_revision", kvh.compact_revision},
      {"db_size", st.db_size},
  });
  nlohmann::json ms = nlohmann::json::array();
  for (const auto& m : members) ms.push_back(member_json(m));
  (*meta)["members"] = ms;
  sink.set_metadata(*meta);

  const std::atomic<bool>* cancel = ctx.cancel;
  auto report = ctx.progress;
  uint64_t expected = uint64_t(st.db_size) + 32;
  SnapshotSink* sink_ptr = &sink;
  sink.add_stream(kSnapshotFileName, [client, meta, cancel, report, expected, sink_ptr](int fd) {
    uint64_t done = 0;
    auto last = std::chrono::steady_clock::now();
    SnapshotResult r = client->snapshot(
        [&](std::string_view piece) {
          write_all(fd, reinterpret_cast<const uint8_t*>(piece.data()), piece.size(), kSnapshotFileName);
          done += piece.size();
          auto now = std::chrono::steady_clock::now();
          if (report && now - last > std::chrono::milliseconds(500)) {
            last = now;
            report(WorkProgress{cairn::v1::PHASE_STREAM, done, std::max(expected, done), 0, 0, kSnapshotFileName});
          }
        },
        cancel);
    // What the stream itself told: recorded once it is whole and checked.
    MemberStatus after = client->status();
    (*meta)["db_size"] = r.db_size;
    (*meta)["sha256"] = r.sha256;
    (*meta)["revision_end"] = after.revision;
    sink_ptr->set_metadata(*meta);
    if (report) report(WorkProgress{cairn::v1::PHASE_STREAM, r.bytes, r.bytes, 1, 1, kSnapshotFileName});
  });
}

std::vector<Reason> EtcdDriver::check_snapshot(const repo::Snapshot& snap) const {
  // A stream named as this driver names it, or (a safety backup taken while
  // etcd was stopped) this member's data dir; nothing else is restored here.
  const std::string stream = std::string("stdin:") + kSnapshotFileName;
  if (snap.paths == std::vector<std::string>{stream}) return {};
  if (snap.paths == std::vector<std::string>{settings_.data_dir} && snap.component.is_object() &&
      snap.component.value("kind", "") == "data_dir")
    return {};
  std::string held;
  for (const auto& p : snap.paths) held += (held.empty() ? "'" : ", '") + p + "'";
  return {make_reason(cairn::v1::ERROR_CODE_UNSUPPORTED_TASK,
                      "snapshot '" + snap.id.substr(0, 8) + "' holds " + held + ", not an etcd snapshot ('" + kSnapshotFileName +
                          "') or this member's data dir '" + settings_.data_dir + "'",
                      component_)};
}

std::vector<Reason> EtcdDriver::verify(TaskContext& ctx, const nlohmann::json& recorded) {
  // A member just started may need a few seconds to find a leader: checks
  // are repeated until they pass or start_timeout_seconds ran out.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(settings_.start_timeout_seconds);
  std::vector<Reason> reasons;
  auto fail = [&](const std::string& d, const std::string& item = {}) {
    reasons.push_back(make_reason(cairn::v1::ERROR_CODE_VERIFY_FAILED, d, item.empty() ? component_ : item));
  };
  if (ctx.progress) ctx.progress(WorkProgress{cairn::v1::PHASE_VERIFY, 0, 0, 0, 0, {}});
  for (;;) {
    reasons.clear();
    try {
      Client c(client_options());
      MemberStatus st = c.status();
      remember_ids(st);
      std::vector<Member> members = c.members();
      uint64_t leader = 0;
      bool leaders_agree = true;
      int64_t min_rev = st.revision;
      std::vector<std::pair<std::string, std::unique_ptr<Client>>> clients;
      for (const auto& m : members) {
        std::string who = m.name.empty() ? id_hex(m.id) : m.name;
        if (m.client_urls.empty()) {
          fail("etcd member '" + who + "' has no client URL (it has not started)", who);
          continue;
        }
        try {
          auto mc = std::make_unique<Client>(client_options(m.client_urls.front()));
          MemberStatus ms = mc->status();
          for (const auto& e : ms.errors) fail("etcd member '" + who + "' reports: " + e, who);
          if (ms.leader == 0) fail("etcd member '" + who + "' knows no leader", who);
          if (leader == 0)
            leader = ms.leader;
          else if (ms.leader != 0 && ms.leader != leader)
            leaders_agree = false;
          min_rev = std::min(min_rev, ms.revision);
          clients.emplace_back(who, std::move(mc));
        } catch (const Error& e) {
          fail("etcd member '" + who + "' does not answer: " + e.what(), who);
        }
      }
      if (!leaders_agree) fail("etcd members disagree on the leader");
      if (reasons.empty()) {
        // Every member's keyspace hashes the same at a revision all have.
        std::optional<uint32_t> first;
        std::string first_who;
        for (auto& [who, mc] : clients) {
          uint32_t h = mc->hash_kv(min_rev).hash;
          if (!first) {
            first = h;
            first_who = who;
          } else if (h != *first) {
            fail("etcd member '" + who + "' hashes its keys to " + std::to_string(h) + " at revision " + std::to_string(min_rev) +
                     ", member '" + first_who + "' to " + std::to_string(*first),
                 who);
          }
        }
      }
      if (reasons.empty() && recorded.is_object() && recorded.contains("revision") && recorded.value("kind", "snapshot") == "snapshot") {
        int64_t rev = recorded["revision"].get<int64_t>();
        if (st.revision < rev) {
          fail("etcd is at revision " + std::to_string(st.revision) + ", older than the snapshot's " + std::to_string(rev));
        } else {
          if (recorded.contains("key_count")) {
            int64_t n = c.count_keys(rev);
            if (n != recorded["key_count"].get<int64_t>())
              fail("etcd holds " + std::to_string(n) + " keys at revision " + std::to_string(rev) + ", the snapshot " +
                   std::to_string(recorded["key_count"].get<int64_t>()));
          }
          if (recorded.contains("hash_kv")) {
            uint32_t h = c.hash_kv(rev).hash;
            if (h != recorded["hash_kv"].get<uint32_t>())
              fail("etcd's keys hash to " + std::to_string(h) + " at revision " + std::to_string(rev) + ", the snapshot's to " +
                   std::to_string(recorded["hash_kv"].get<uint32_t>()));
          }
        }
      }
    } catch (const Error& e) {
      fail(e.what());
    } catch (const nlohmann::json::exception& e) {
      fail(std::string("the snapshot's recorded metadata is unusable: ") + e.what());
      return reasons;
    }
    if (reasons.empty() || std::chrono::steady_clock::now() > deadline) return reasons;
    if (ctx.cancel && ctx.cancel->load()) return reasons;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

void EtcdDriver::wait_until_answering(TaskContext& ctx) const {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(settings_.start_timeout_seconds);
  std::string last;
  for (;;) {
    try {
      ClientOptions o = client_options();
      o.timeout = std::chrono::milliseconds(2000);
      Client c(o);
      remember_ids(c.status());
      return;
    } catch (const Error& e) {
      last = e.what();
    }
    if (ctx.cancel && ctx.cancel->load()) throw Error(Errc::interrupted, "cancelled while waiting for etcd to answer");
    if (std::chrono::steady_clock::now() > deadline)
      throw Error(Errc::io, "etcd did not answer within " + std::to_string(settings_.start_timeout_seconds) + " s of its start: " + last);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
}

DriverResult EtcdDriver::restore(TaskContext& ctx, const RestoreSpec& spec) {
  if (!spec.target_name.empty()) {
    DriverResult r;
    r.reasons.push_back(make_reason(cairn::v1::ERROR_CODE_UNSUPPORTED_TASK,
                                    "etcd restores only in place; no target '" + spec.target_name + "'", component_));
    return r;
  }
  switch (spec.step) {
    case v1::RESTORE_STEP_ALL:
      return restore_all(ctx, spec);
    case v1::RESTORE_STEP_STOP:
    case v1::RESTORE_STEP_HALT:
      return step_stop(ctx);
    case v1::RESTORE_STEP_DATA:
      return step_data(ctx, spec);
    case v1::RESTORE_STEP_START:
      return step_start(ctx);
    case v1::RESTORE_STEP_VERIFY:
      return step_verify(ctx, spec);
    case v1::RESTORE_STEP_ROLLBACK:
      return step_rollback(ctx, spec.cluster_options);
    case v1::RESTORE_STEP_PREFLIGHT: {
      DriverResult r;
      r.reasons = restore_preflight(ctx, spec);
      r.outcome = r.reasons.empty() ? cairn::v1::TASK_OUTCOME_SUCCEEDED : cairn::v1::TASK_OUTCOME_FAILED;
      return r;
    }
    case v1::RESTORE_STEP_COMMIT:
      return restore_commit(ctx, spec);
    default:  // not a step (protobuf's sentinels): admission refused it already
      break;
  }
  return {};
}

}  // namespace cairn::agent::etcd
