// The etcd drill (docs/drills.md): started in a drill's sandbox
// (agent/sandbox/sandbox.h) on the restored snapshot and checked against
// what the backup recorded. Its tools are its own [drill] keys.
#include "agent/drivers/etcd/drill.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "agent/config_reader.h"
#include "agent/drill_paths.h"
#include "agent/drill_support.h"
#include "agent/drivers/etcd/etcd_driver.h"
#include "agent/drivers/etcd/snapshot_stream.h"
#include "agent/platform/http.h"
#include "agent/platform/process.h"
#include "agent/platform/socket_client.h"
#include "agent/sandbox/sandbox.h"
#include "common/repo/repository.h"
#include "common/repo/snapshot.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent {

namespace v1 = cairn::v1;
namespace fs = std::filesystem;

namespace drill_internal {

using Report = DrillReport;

struct EtcdDrillKeys {
  std::string etcd = "etcd", etcdctl = "etcdctl";
  // A 0600 file "user:password" of a user that may read every key of the
  // etcd clusters drilled here (their backups keep authentication on); "": none.
  std::string etcd_auth_file;
};

std::string find_file(const std::string& root, const std::string& name) {
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
    if (it->is_regular_file() && it->path().filename() == name) return it->path().string();
  return {};
}

int64_t json_int(const nlohmann::json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return -1;
  const auto& v = j[key];
  if (v.is_number()) return v.get<int64_t>();
  if (v.is_string()) try {
      return std::stoll(v.get<std::string>());
    } catch (...) {
    }
  return -1;
}

void drill_etcd(const DrillDecl& d, const EtcdDrillKeys& dk, Sandbox& box, const repo::Snapshot& snap, const std::string& restored,
                Report& rep, const std::atomic<bool>* cancel, const std::function<void(const std::string&)>& phase) {
  const nlohmann::json& rec = snap.component;
  std::string file = find_file(restored, etcd::kSnapshotFileName);
  if (file.empty()) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, std::string("the snapshot holds no '") + etcd::kSnapshotFileName + "'");
    return;
  }
  // The stream's own check, as the backup made it (the database, then its
  // SHA-256: etcd::SnapshotStreamCheck), read back in pieces, never whole.
  {
    etcd::SnapshotStreamCheck sc;
    std::string problem;
    try {
      std::ifstream in(file, std::ios::binary);
      const uint64_t size = fs::file_size(file);
      const uint64_t db = size > etcd::kSnapshotHashSize ? size - etcd::kSnapshotHashSize : 0;
      std::string piece;
      for (uint64_t off = 0; off < size;) {
        // The database's pieces announce what of it is still to come; the hash comes alone.
        const uint64_t n = off < db ? std::min<uint64_t>(1 << 20, db - off) : size - off;
        piece.resize(size_t(n));
        if (!in.read(piece.data(), std::streamsize(n))) throw Error(Errc::io, "cannot read '" + file + "'");
        off += n;
        sc.feed(piece, off < db ? db - off : 0);
      }
      sc.finish();
    } catch (const Error& e) {
      problem = e.what();
    }
    std::string expected = rec.value("sha256", std::string());
    rep.check("etcd snapshot's trailing sha256 matches its database", "match", problem.empty() ? "match" : problem, problem.empty());
    if (!problem.empty()) return;
    if (!expected.empty()) rep.check("etcd snapshot sha256 as recorded", expected, sc.sha256_hex(), expected == sc.sha256_hex());
  }
  const std::string data = box.dir() + "/etcd";
  const std::string url = "http://127.0.0.1:2379", peer = "http://127.0.0.1:2380";
  // A backup keeps the cluster's users and `auth enable`: the restored
  // server answers reads only to a user of that cluster ([drill]
  // etcd_auth_file), given to etcdctl in its environment, never its argv.
  std::vector<std::string> ctl_env = {"ETCDCTL_API=3", "ETCDCTL_ENDPOINTS=" + url};
  if (!dk.etcd_auth_file.empty()) {
    try {
      auto [user, password] = etcd::read_auth_file(dk.etcd_auth_file);
      ctl_env.push_back("ETCDCTL_USER=" + user + ":" + password);
    } catch (const Error& e) {
      // (read_auth_file names the etcd component's setting: say which file this is.)
      std::string why = e.what();
      if (auto at = why.find("etcd 'auth_file'"); at != std::string::npos) why.replace(at, 16, "[drill] etcd_auth_file");
      throw Error(e.code(), why);
    }
  }
  auto auth_refused = [](const std::string& why) {
    return why.find("user name is empty") != std::string::npos || why.find("permission denied") != std::string::npos ||
           why.find("authentication failed") != std::string::npos || why.find("invalid auth token") != std::string::npos;
  };
  auto etcdctl = [&](std::vector<std::string> args, std::chrono::milliseconds timeout, bool must = true) {
    std::vector<std::string> argv = {dk.etcdctl};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = box.run(argv, timeout, cancel, ctl_env);
    if (must && !r.ok) {
      std::string why = "'" + dk.etcdctl + " " + args.at(0) + " " + (args.size() > 1 ? args[1] : "") + "' " + r.why;
      if (auth_refused(r.why))
        why += dk.etcd_auth_file.empty() ? ": the backed-up cluster has authentication on, so its keys answer only to one of its users; "
                                           "give the drill agent one that may read every key ([drill] etcd_auth_file, a 0600 file "
                                           "'user:password'). The server started on the restored data; its keys were not checked"
                                         : ": the user in [drill] etcd_auth_file ('" + dk.etcd_auth_file +
                                               "') cannot read every key of the backed-up cluster (the backup holds that cluster's "
                                               "users and roles, as they were when it was taken)";
      throw Error(Errc::io, why);
    }
    return r;
  };
  auto t = Clock::now();
  phase("start");
  {
    auto pr = box.run({dk.etcdctl, "snapshot", "restore", file, "--data-dir", data, "--name", "drill", "--initial-cluster", "drill=" + peer,
                       "--initial-cluster-token", "cairn-drill", "--initial-advertise-peer-urls", peer},
                      std::chrono::minutes(30), cancel, {"ETCDCTL_API=3"});
    if (!pr.ok) {
      rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "etcd refused the snapshot: '" + dk.etcdctl + " snapshot restore' " + pr.why);
      rep.check("etcdctl snapshot restore", "ok", "failed", false);
      return;
    }
  }
  pid_t server =
      box.spawn_server({dk.etcd, "--name", "drill", "--data-dir", data, "--listen-client-urls", url, "--advertise-client-urls", url,
                        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "drill=" + peer},
                       box.dir() + "/etcd.log");
  if (!wait_started(d, box, server, box.dir() + "/etcd.log", "etcd", "etcd endpoint health", "healthy", cancel, rep, t, [&] {
        // A server that refuses the request for want of a user answers: it is up.
        // (-w json: the endpoint's own error is in the output, not only "unhealthy cluster".)
        auto pr = etcdctl({"endpoint", "health", "-w", "json"}, std::chrono::seconds(5), false);
        return pr.ok || auth_refused(pr.out) ? std::string() : pr.why;
      }))
    return;
  t = Clock::now();
  phase("check");
  const int64_t revision = json_int(rec, "revision");
  if (revision <= 0) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the backup recorded no etcd revision to check against");
    return;
  }
  const std::string rev = "--rev=" + std::to_string(revision);
  auto count = nlohmann::json::parse(
      etcdctl({"get", "", "--prefix", "--keys-only", "--limit=1", rev, "-w", "json"}, std::chrono::minutes(5)).out, nullptr, false);
  rep.check("keys at revision " + std::to_string(revision), json_int(rec, "key_count"), json_int(count, "count"),
            json_int(count, "count") == json_int(rec, "key_count"));
  auto hk = nlohmann::json::parse(etcdctl({"endpoint", "hashkv", rev, "-w", "json"}, std::chrono::minutes(5)).out, nullptr, false);
  int64_t hash = -1;
  if (hk.is_array() && !hk.empty() && hk[0].is_object()) hash = json_int(hk[0].value("HashKV", nlohmann::json::object()), "hash");
  rep.check("hashkv at revision " + std::to_string(revision), json_int(rec, "hash_kv"), hash, hash == json_int(rec, "hash_kv"));
  rep.phases["check"] = seconds_since(t);
}

}  // namespace drill_internal

namespace etcd {

namespace {

class EtcdDrill : public DriverDrill {
 public:
  drill_internal::EtcdDrillKeys keys_;
  nlohmann::json keys() const override {
    return {{"etcd", keys_.etcd}, {"etcdctl", keys_.etcdctl}, {"etcd_auth_file", keys_.etcd_auth_file}};
  }
  std::string tools_missing(const DrillDecl&) const override {
    if (!platform::find_program(keys_.etcd)) return "'" + keys_.etcd + "' ([drill] etcd) is not found";
    if (!platform::find_program(keys_.etcdctl)) return "'" + keys_.etcdctl + "' ([drill] etcdctl) is not found";
    return {};
  }
  void run(DrillRun& r) const override {
    drill_internal::drill_etcd(r.decl, keys_, r.box, r.snaps.front(), r.roots.front(), r.rep, r.cancel, r.phase);
  }
};

}  // namespace

std::shared_ptr<const DriverDrill> make_drill(TableReader* dr) {
  auto d = std::make_shared<EtcdDrill>();
  if (!dr) return d;
  d->keys_.etcd = dr->string_or("etcd", d->keys_.etcd);
  d->keys_.etcdctl = dr->string_or("etcdctl", d->keys_.etcdctl);
  d->keys_.etcd_auth_file = dr->string_or("etcd_auth_file", "");
  if (!d->keys_.etcd_auth_file.empty()) require_absolute(*dr, "etcd_auth_file", d->keys_.etcd_auth_file);
  return d;
}

}  // namespace etcd

}  // namespace cairn::agent
