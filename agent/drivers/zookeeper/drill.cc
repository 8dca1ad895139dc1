// The ZooKeeper drill (docs/drills.md): started in a drill's sandbox
// (agent/sandbox/sandbox.h) on the restored snapshot and checked against
// what the backup recorded. Its tools are its own [drill] keys.
#include "agent/drivers/zookeeper/drill.h"

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
#include "agent/drivers/zookeeper/four_letter.h"
#include "agent/drivers/zookeeper/layout.h"
#include "agent/drivers/zookeeper/staging.h"
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

// (drill.h) A standalone ZooKeeper server on a ZooKeeper backup's restored snapshot
// and transaction logs, at 127.0.0.1:2181 of the sandbox's namespace. Its
// status once it serves; nullopt when it did not (rep says why). `recorded`
// gets the zxid the backup recorded.
std::optional<zookeeper::ServerStatus> start_zookeeper(const DrillDecl& d, Sandbox& box, const nlohmann::json& rec,
                                                       const std::string& restored, Report& rep, const std::atomic<bool>* cancel,
                                                       Clock::time_point started, uint64_t* recorded) {
  const std::string zookeeper_jar = zookeeper::drill_jar(d);
  const std::string data_dir = rec.value("data_dir", std::string()), log_dir = rec.value("data_log_dir", std::string());
  auto zxid = zookeeper::parse_zxid(rec.value("zxid", std::string()));
  if (data_dir.empty() || data_dir[0] != '/' || !zxid) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the backup recorded no ZooKeeper data_dir or zxid to check against");
    return std::nullopt;
  }
  *recorded = *zxid;
  // The driver stores a staged copy under <dataDir>/.cairn-zookeeper-data
  // (and <dataLogDir>/.cairn-zookeeper-log where the logs live apart).
  std::string why;
  auto data_at = sandboxed_path(restored, data_dir + "/" + zookeeper::kDataRootName, &why);
  auto log_at = log_dir.empty() || log_dir == data_dir ? data_at : sandboxed_path(restored, log_dir + "/" + zookeeper::kLogRootName, &why);
  if (!data_at || !log_at) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the snapshot records ZooKeeper's data_dir '" + data_dir + "' and data_log_dir '" + log_dir +
                                               "', which the drill does not use: " + why + "; nothing was started");
    return std::nullopt;
  }
  const std::string dd = *data_at;
  std::string ld = dd;
  if (log_at != data_at && fs::exists(fs::symlink_status(*log_at))) ld = *log_at;
  if (!fs::is_directory(dd + "/version-2")) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED,
             "the snapshot holds no ZooKeeper data directory (" + data_dir + "/" + zookeeper::kDataRootName + "/version-2)");
    return std::nullopt;
  }
  {
    std::ofstream cfg(box.dir() + "/zoo.cfg");
    cfg << "tickTime=2000\ndataDir=" << dd << "\ndataLogDir=" << ld
        << "\nclientPort=2181\nclientPortAddress=127.0.0.1\n4lw.commands.whitelist=srvr,mntr,dump\nadmin.enableServer=false\n"
        << "maxClientCnxns=0\n";
  }
  const std::string tmp = box.tmp_dir();
  pid_t server = box.spawn_server(
      {d.java, "-Xmx" + std::to_string(d.java_heap_mb) + "m", "-XX:-UsePerfData", "-Djava.io.tmpdir=" + tmp, "-Dzookeeper.log.dir=" + tmp,
       "-cp", zookeeper_jar, "org.apache.zookeeper.server.quorum.QuorumPeerMain", box.dir() + "/zoo.cfg"},
      box.dir() + "/zookeeper.log");
  std::optional<zookeeper::ServerStatus> st;
  if (!wait_started(d, box, server, box.dir() + "/zookeeper.log", "ZooKeeper", "ZooKeeper serving (standalone)", "serving", cancel, rep,
                    started, [&] {
                      auto s = zookeeper::parse_srvr(zookeeper::four_letter("127.0.0.1:2181", "srvr", std::chrono::seconds(2)));
                      if (s.mode != "standalone" || !s.has_zxid) return "mode " + s.mode;
                      st = s;
                      return std::string();
                    }))
    return std::nullopt;
  return st;
}

// ZooKeeper: a standalone server on the restored snapshot and transaction
// logs; it must replay them to the zxid the backup recorded.
void drill_zookeeper(const DrillDecl& d, Sandbox& box, const repo::Snapshot& snap, const std::string& restored, Report& rep,
                     const std::atomic<bool>* cancel, const std::function<void(const std::string&)>& phase) {
  const nlohmann::json& rec = snap.component;
  auto t = Clock::now();
  phase("start");
  uint64_t recorded = 0;
  auto st = start_zookeeper(d, box, rec, restored, rep, cancel, t, &recorded);
  if (!st) return;
  t = Clock::now();
  phase("check");
  // The server replayed every transaction the backup held: its zxid is the
  // recorded one or later (a new epoch when it took over as standalone).
  rep.check("zxid reached", zookeeper::zxid_hex(recorded), zookeeper::zxid_hex(st->zxid), st->zxid >= recorded);
  try {
    auto m = zookeeper::parse_mntr(zookeeper::four_letter("127.0.0.1:2181", "mntr", std::chrono::seconds(5)));
    int64_t expected = rec.contains("znode_count") ? rec.value("znode_count", int64_t(-1)) : -1;
    int64_t found = m.has_node_count ? int64_t(m.node_count) : -1;
    rep.check("znodes", expected < 0 ? nlohmann::json("> 0") : nlohmann::json(expected), found,
              expected < 0 ? found > 0 : found == expected);
  } catch (const Error& e) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, std::string("ZooKeeper's mntr: ") + e.what());
  }
  rep.phases["check"] = seconds_since(t);
}

}  // namespace drill_internal

namespace zookeeper {

namespace {

class ZookeeperDrill : public DriverDrill {
 public:
  std::string zookeeper_jar = "/usr/share/java/zookeeper.jar";
  nlohmann::json keys() const override { return {{"zookeeper_jar", zookeeper_jar}}; }
  std::string tools_missing(const DrillDecl& d) const override {
    if (!platform::find_program(d.java)) return "'" + d.java + "' ([drill] java) is not found";
    if (::access(zookeeper_jar.c_str(), R_OK) != 0) return "'" + zookeeper_jar + "' ([drill] zookeeper_jar) is not readable";
    return {};
  }
  void run(DrillRun& r) const override {
    drill_internal::drill_zookeeper(r.decl, r.box, r.snaps.front(), r.roots.front(), r.rep, r.cancel, r.phase);
  }
};

}  // namespace

std::string drill_jar(const DrillDecl& d) {
  const auto* z = dynamic_cast<const ZookeeperDrill*>(d.drill("zookeeper"));
  return z ? z->zookeeper_jar : ZookeeperDrill().zookeeper_jar;
}

std::shared_ptr<const DriverDrill> make_drill(TableReader* dr) {
  auto d = std::make_shared<ZookeeperDrill>();
  if (!dr) return d;
  d->zookeeper_jar = dr->string_or("zookeeper_jar", d->zookeeper_jar);
  require_absolute(*dr, "zookeeper_jar", d->zookeeper_jar);
  return d;
}

}  // namespace zookeeper

}  // namespace cairn::agent
