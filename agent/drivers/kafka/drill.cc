// The Kafka drill (docs/drills.md): started in a drill's sandbox
// (agent/sandbox/sandbox.h) on the restored snapshot and checked against
// what the backup recorded. Its tools are its own [drill] keys.
#include "agent/drivers/kafka/drill.h"

#include <fcntl.h>
#include <grp.h>
#include <librdkafka/rdkafka.h>
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
#include "agent/drivers/kafka/broker.h"
#include "agent/drivers/kafka/log_dir.h"
#include "agent/drivers/zookeeper/drill.h"
#include "agent/drivers/zookeeper/four_letter.h"
#include "agent/drivers/zookeeper/layout.h"
#include "agent/platform/http.h"
#include "agent/platform/process.h"
#include "agent/platform/socket_client.h"
#include "agent/sandbox/sandbox.h"
#include "common/audit/kafka_conf.h"
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

struct KafkaDrillKeys {
  // Kafka's jars (kafka_<scala>-<version>.jar and its dependencies), of the
  // version the drilled brokers ran: the brokers of a set start from them.
  std::string kafka_libs_dir = "/opt/kafka/libs";
  // Kafka 3.x's jars for brokers in ZooKeeper mode (Kafka 4 has none); "":
  // kafka_libs_dir, when it holds a 3.x release.
  std::string kafka_zookeeper_libs_dir;
};

// Kafka (KRaft): every broker's snapshot of the set, restored side by side,
// started as one cluster in the sandbox (docs/drills.md § Kafka). Each node
// keeps its node id, roles and log dirs; its listeners, quorum voters and
// every other setting are the drill's own, on loopback ports of the
// sandbox's namespace.
struct KafkaMember {
  std::string node_id;
  bool broker = true, controller = true;
  std::vector<std::string> log_dirs;  // restored, in the sandbox
  std::string metadata_dir;           // the restored log dir holding __cluster_metadata-0 ("": none)
  nlohmann::json partitions;          // recorded: {"topic-p": [log_start, log_end, high_watermark]}
  bool zookeeper_mode = false;        // metadata in ZooKeeper, not in a KRaft quorum
  std::string chroot;                 // ZooKeeper mode: zookeeper.connect's chroot ("": none or not recorded)
};

// The Kafka release of a libs dir, from its kafka_<scala>-<version>.jar
// ("3.9.1"); "" when it holds none.
std::string kafka_libs_version(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (!name.starts_with("kafka_") || !name.ends_with(".jar")) continue;
    name = name.substr(0, name.size() - 4);
    auto dash = name.find('-');
    if (dash == std::string::npos) continue;
    std::string version = name.substr(dash + 1);
    if (!version.empty() && std::isdigit(static_cast<unsigned char>(version[0])) && version.find('-') == std::string::npos) return version;
  }
  return {};
}

// The znode paths of ephemeral nodes a ZooKeeper server's `dump` lists.
std::vector<std::string> ephemeral_paths(const std::string& dump) {
  std::vector<std::string> out;
  std::istringstream in(dump);
  for (std::string line; std::getline(in, line);) {
    size_t b = line.find_first_not_of(" \t");
    if (b != std::string::npos && line[b] == '/') out.push_back(line.substr(b, line.find_last_not_of(" \t\r") + 1 - b));
  }
  return out;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : text + ",") {
    if (c == ',') {
      while (!cur.empty() && std::isspace(static_cast<unsigned char>(cur.back()))) cur.pop_back();
      size_t b = 0;
      while (b < cur.size() && std::isspace(static_cast<unsigned char>(cur[b]))) ++b;
      if (b < cur.size()) out.push_back(cur.substr(b));
      cur.clear();
    } else {
      cur += c;
    }
  }
  return out;
}

// Reads every partition from its log start to `ends` (its high watermark)
// through the sandbox's brokers, batch CRCs checked by the client. Returns
// per partition the records read, or why it stopped short.
struct PartitionRead {
  int64_t records = 0, bytes = 0, reached = -1;
  std::string error;
};

std::map<std::string, PartitionRead> read_partitions(const std::string& bootstrap,
                                                     const std::map<std::string, std::pair<std::string, int32_t>>& names,
                                                     const std::map<std::string, int64_t>& ends, const std::atomic<bool>* cancel,
                                                     std::chrono::seconds timeout) {
  audit::KafkaClientSettings k;
  k.brokers = bootstrap;
  audit::KafkaConf conf(k, "cairn-drill");
  audit::ErrorTrail trail;
  conf.record_errors(&trail);
  conf.set("group.id", "cairn-drill");  // assigned, never joined or committed
  conf.set("enable.auto.commit", "false");
  conf.set("enable.partition.eof", "true");
  conf.set("check.crcs", "true");
  conf.set("isolation.level", "read_uncommitted");
  conf.set("log_level", "2");
  audit::Rk rk = conf.make(RD_KAFKA_CONSUMER);
  std::map<std::string, PartitionRead> out;
  rd_kafka_topic_partition_list_t* parts = rd_kafka_topic_partition_list_new(int(names.size()));
  size_t open = 0;
  for (const auto& [name, tp] : names) {
    out[name];
    if (ends.at(name) <= 0) continue;
    rd_kafka_topic_partition_list_add(parts, tp.first.c_str(), tp.second)->offset = RD_KAFKA_OFFSET_BEGINNING;
    ++open;
  }
  rd_kafka_assign(rk.get(), parts);
  rd_kafka_topic_partition_list_destroy(parts);
  std::set<std::string> done;
  auto deadline = Clock::now() + timeout;
  while (done.size() < open && Clock::now() < deadline && !(cancel && cancel->load())) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk.get(), 200);
    if (!m) continue;
    std::unique_ptr<rd_kafka_message_t, void (*)(rd_kafka_message_t*)> hold(m, rd_kafka_message_destroy);
    if (!m->rkt) continue;
    const std::string name = std::string(rd_kafka_topic_name(m->rkt)) + "-" + std::to_string(m->partition);
    auto it = out.find(name);
    if (it == out.end() || done.count(name)) continue;
    PartitionRead& r = it->second;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      r.reached = std::max(r.reached, m->offset);
      if (r.reached >= ends.at(name)) done.insert(name);
      continue;
    }
    if (m->err) {
      r.error = rd_kafka_message_errstr(m);
      done.insert(name);
      continue;
    }
    ++r.records;
    r.bytes += int64_t(m->len + m->key_len);
    r.reached = std::max(r.reached, m->offset + 1);
    if (r.reached >= ends.at(name)) done.insert(name);
  }
  rd_kafka_assign(rk.get(), nullptr);
  return out;
}

// A Kafka cluster in ZooKeeper mode keeps its topics, partitions' leaders
// and ISR and its cluster id in ZooKeeper: the set's ZooKeeper snapshot is
// started first, on the sandbox's 127.0.0.1:2181, and the brokers wait until
// the backed-up brokers' registrations (ephemeral znodes of their old
// sessions, which the restored server expires after their timeout) are gone,
// as a restore waits (a broker finding its id registered exits). Picks the
// Kafka 3.x jars to run them (`libs`) and zookeeper.connect's chroot.
bool zookeeper_mode_ready(const DrillDecl& d, const KafkaDrillKeys& dk, Sandbox& box, const std::vector<KafkaMember>& members,
                          const repo::Snapshot* zk, const std::string& zk_root, Report& rep, const std::atomic<bool>* cancel,
                          Clock::time_point started, std::string& libs, std::string& chroot) {
  if (!zk) {
    rep.fail(v1::ERROR_CODE_UNSUPPORTED_TASK,
             "the brokers are in ZooKeeper mode: their topics' metadata lives in ZooKeeper, and the drill was given no "
             "ZooKeeper snapshot of the set; back up the ensemble in the same set as the brokers");
    return false;
  }
  libs.clear();
  std::string found;
  for (const std::string& dir : {dk.kafka_zookeeper_libs_dir, dk.kafka_libs_dir}) {
    if (dir.empty()) continue;
    const std::string v = kafka_libs_version(dir);
    found += (found.empty() ? "" : ", ") + dir + (v.empty() ? " (no Kafka jar)" : " (Kafka " + v + ")");
    if (!v.empty() && std::isdigit(static_cast<unsigned char>(v[0])) && std::atoi(v.c_str()) < 4) {
      libs = dir;
      break;
    }
  }
  if (libs.empty()) {
    rep.fail(v1::ERROR_CODE_UNSUPPORTED_TASK, "brokers in ZooKeeper mode need Kafka 3.x's jars (Kafka 4 runs KRaft only); found " + found +
                                                  "; declare [drill] kafka_zookeeper_libs_dir");
    return false;
  }
  bool connect_recorded = false;
  for (const auto& m : members) {
    if (m.chroot.empty()) continue;
    if (connect_recorded && m.chroot != chroot) {
      rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the brokers name two ZooKeeper chroots ('" + chroot + "', '" + m.chroot + "')");
      return false;
    }
    chroot = m.chroot, connect_recorded = true;
  }
  uint64_t recorded = 0;
  auto st = start_zookeeper(d, box, zk->component, zk_root, rep, cancel, started, &recorded);
  if (!st) return false;
  rep.check("the set's ZooKeeper replayed to its recorded zxid", zookeeper::zxid_hex(recorded), zookeeper::zxid_hex(st->zxid),
            st->zxid >= recorded);
  if (st->zxid < recorded) return false;
  // The backed-up brokers' registrations: <chroot>/brokers/ids/<id> and
  // <chroot>/controller, ephemeral znodes of sessions that ended with them.
  std::set<std::string> member_ids;
  for (const auto& m : members) member_ids.insert(m.node_id);
  std::vector<std::string> held, at_start;
  std::string last_error;
  const auto waited_from = Clock::now();
  auto until = waited_from + std::chrono::seconds(d.start_timeout_seconds);
  for (bool first = true;;) {
    held.clear();
    try {
      std::string dump = zookeeper::four_letter("127.0.0.1:2181", "dump", std::chrono::seconds(5));
      // Only the "ephemeral nodes dump" section names znodes.
      if (auto b = dump.find("ephemeral nodes dump"); b != std::string::npos) dump = dump.substr(b);
      if (auto e = dump.find("Connections dump"); e != std::string::npos) dump = dump.substr(0, e);
      auto paths = ephemeral_paths(dump);
      // zookeeper.connect not recorded (no server.properties in the
      // snapshot): the chroot under which a member's id is registered.
      if (first && !connect_recorded)
        for (const auto& p : paths)
          if (auto k = p.rfind("/brokers/ids/"); k != std::string::npos && member_ids.count(p.substr(k + 13))) chroot = p.substr(0, k);
      for (const auto& p : paths)
        if (p == chroot + "/controller" || p.starts_with(chroot + "/brokers/ids/")) held.push_back(p);
      if (first) at_start = held;
      first = false;  // the first answer: what the restored server held at its start
      last_error.clear();
    } catch (const Error& e) {
      last_error = e.what();
    }
    if ((held.empty() && last_error.empty()) || Clock::now() >= until || (cancel && cancel->load())) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  const bool gone = held.empty() && last_error.empty();
  std::string expired;
  for (const auto& p : at_start) expired += (expired.empty() ? "" : ", ") + p;
  char waited[32];
  std::snprintf(waited, sizeof waited, "%.1f", seconds_since(waited_from));
  rep.check("the backed-up brokers' registrations expired in the restored ZooKeeper", "none left",
            gone ? "none left" + (expired.empty() ? std::string() : std::string(" (") + expired + " expired in " + waited + " s)")
            : last_error.empty()
                ? std::to_string(held.size()) + " still held after " + std::to_string(d.start_timeout_seconds) + " s, e.g. " + held.front()
                : "ZooKeeper's dump: " + last_error,
            gone);
  return gone;
}

void drill_kafka(const DrillDecl& d, const KafkaDrillKeys& dk, Sandbox& box, const std::vector<repo::Snapshot>& snaps,
                 const std::vector<std::string>& roots, const repo::Snapshot* zk, const std::string& zk_root, Report& rep,
                 const std::atomic<bool>* cancel, const std::function<void(const std::string&)>& phase) {
  auto t = Clock::now();
  phase("start");
  std::vector<KafkaMember> members;
  std::string cluster_id;
  std::set<std::string> voters;  // the quorum's node ids, as the brokers' configuration names them
  for (size_t i = 0; i < snaps.size(); ++i) {
    const nlohmann::json& rec = snaps[i].component;
    const std::string node = rec.is_object() ? rec.value("node_id", std::string()) : std::string();
    if (node.empty() || node.size() > 9 || !std::all_of(node.begin(), node.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      rep.fail(v1::ERROR_CODE_VERIFY_FAILED,
               "snapshot '" + snaps[i].id + "' recorded no Kafka node id ('" + node + "'): it is not a broker's backup");
      return;
    }
    const std::string cid = rec.value("cluster_id", std::string());
    if (i == 0)
      cluster_id = cid;
    else if (cid != cluster_id) {
      rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the brokers' snapshots are of two clusters ('" + cluster_id + "', '" + cid + "')");
      return;
    }
    KafkaMember m;
    m.node_id = rec.value("node_id", std::string());
    m.zookeeper_mode = rec.value("metadata_mode", std::string()) == "zookeeper";
    if (i > 0 && m.zookeeper_mode != members.front().zookeeper_mode) {
      rep.fail(v1::ERROR_CODE_UNSUPPORTED_TASK,
               "the set's brokers are in two metadata modes (KRaft and ZooKeeper): a cluster migrating to KRaft is not "
               "drilled; drill a set taken before or after the migration");
      return;
    }
    if (m.zookeeper_mode) m.controller = false;
    m.partitions = rec.contains("partitions") && rec["partitions"].is_object() ? rec["partitions"] : nlohmann::json::object();
    if (rec.contains("log_dirs") && rec["log_dirs"].is_array())
      for (const auto& ld : rec["log_dirs"]) {
        const std::string p = ld.is_object() ? ld.value("path", std::string()) : std::string();
        std::string why;
        auto at = sandboxed_path(roots[i], p, &why);
        if (!at) {
          rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the snapshot of node " + m.node_id + " records log dir '" + p +
                                                     "', which the drill does not use: " + why + "; nothing was started");
          return;
        }
        if (!fs::is_directory(fs::symlink_status(*at))) {
          rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the snapshot of node " + m.node_id + " holds no log dir '" + p + "'");
          return;
        }
        m.log_dirs.push_back(*at);
        if (fs::is_directory(fs::symlink_status(*at + "/__cluster_metadata-0"))) m.metadata_dir = *at;
      }
    if (m.log_dirs.empty()) {
      rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the snapshot of node " + m.node_id + " recorded no log dir");
      return;
    }
    // Roles and voters from the configuration the snapshot holds; without
    // one, every node is taken as a combined broker and controller.
    const std::string cfg = rec.value("config_file", std::string());
    std::optional<std::string> cfg_at = cfg.empty() ? std::nullopt : sandboxed_path(roots[i], cfg, nullptr);
    if (cfg_at && fs::is_regular_file(fs::symlink_status(*cfg_at))) {
      auto props = kafka::parse_properties(read_text(*cfg_at));
      if (auto z = props.find("zookeeper.connect"); z != props.end() && z->second.find('/') != std::string::npos) {
        m.chroot = z->second.substr(z->second.find('/'));
        while (m.chroot.size() > 1 && m.chroot.back() == '/') m.chroot.pop_back();
        if (m.chroot == "/") m.chroot.clear();
      }
      if (m.zookeeper_mode) {
        // Its metadata is in ZooKeeper: no roles, no quorum.
      } else if (auto r = props.find("process.roles"); r != props.end()) {
        m.broker = r->second.find("broker") != std::string::npos;
        m.controller = r->second.find("controller") != std::string::npos;
      }
      if (m.zookeeper_mode) {
      } else if (auto v = props.find("controller.quorum.voters"); v != props.end()) {
        for (const auto& voter : split_list(v->second)) voters.insert(voter.substr(0, voter.find('@')));
      } else if (props.count("controller.quorum.bootstrap.servers")) {
        rep.fail(v1::ERROR_CODE_UNSUPPORTED_TASK,
                 "node " + m.node_id +
                     " uses a dynamic KRaft quorum (controller.quorum.bootstrap.servers): its voters and their addresses "
                     "are in the metadata log, which a drill cannot point at the sandbox; only static quorums "
                     "(controller.quorum.voters) are drilled");
        return;
      }
    }
    members.push_back(std::move(m));
  }
  std::set<std::string> ids;
  const bool voters_recorded = !voters.empty();
  for (const auto& m : members) {
    if (!ids.insert(m.node_id).second) {
      rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "two snapshots of node " + m.node_id + " in one drill");
      return;
    }
    if (!voters_recorded && m.controller) voters.insert(m.node_id);
  }
  const bool zk_mode = members.front().zookeeper_mode;
  std::string libs = dk.kafka_libs_dir, chroot;
  if (zk_mode) {
    if (!zookeeper_mode_ready(d, dk, box, members, zk, zk_root, rep, cancel, t, libs, chroot)) return;
  } else {
    size_t voters_here = 0;
    for (const auto& v : voters) voters_here += ids.count(v);
    rep.check("quorum voters among the set's brokers", "a majority of " + std::to_string(voters.size()), voters_here,
              voters_here * 2 > voters.size());
    if (voters_here * 2 <= voters.size()) return;
  }
  // Ports of the sandbox's own loopback: node i listens on 19092 + i
  // (clients) and 19500 + voter index (controllers). A voter the set lacks
  // gets a port nobody answers on.
  std::map<std::string, int> cport;
  int vi = 0;
  for (const auto& v : voters) cport[v] = 19500 + vi++;
  std::string quorum;
  for (const auto& [v, p] : cport) quorum += (quorum.empty() ? "" : ",") + v + "@127.0.0.1:" + std::to_string(p);
  {
    std::ofstream log4j2(box.dir() + "/log4j2.properties");
    log4j2 << "status = warn\nappender.out.type = Console\nappender.out.name = OUT\nappender.out.layout.type = PatternLayout\n"
              "appender.out.layout.pattern = [%d] %p %m (%c)%n\nrootLogger.level = INFO\nrootLogger.appenderRef.out.ref = OUT\n";
    std::ofstream log4j(box.dir() + "/log4j.properties");
    log4j << "log4j.rootLogger=INFO, stdout\nlog4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
             "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
             "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n";
  }
  std::string bootstrap;
  std::vector<std::pair<pid_t, std::string>> servers;  // pid, log
  for (size_t i = 0; i < members.size(); ++i) {
    const KafkaMember& m = members[i];
    const std::string dir = box.dir() + "/node-" + m.node_id;
    mkdir_p(dir, 0700);
    const int port = 19092 + int(i);
    std::string listeners, dirs;
    if (m.broker) listeners = "PLAINTEXT://127.0.0.1:" + std::to_string(port);
    if (m.controller && cport.count(m.node_id))
      listeners += std::string(listeners.empty() ? "" : ",") + "CONTROLLER://127.0.0.1:" + std::to_string(cport[m.node_id]);
    for (const auto& ld : m.log_dirs) dirs += (dirs.empty() ? "" : ",") + ld;
    std::ofstream cfg(dir + "/server.properties");
    if (zk_mode)
      cfg << "broker.id=" << m.node_id << "\nzookeeper.connect=127.0.0.1:2181" << chroot
          << "\nzookeeper.connection.timeout.ms=30000\nlisteners=" << listeners << "\n";
    else
      cfg << "process.roles="
          << (m.broker && m.controller ? "broker,controller"
              : m.broker               ? "broker"
                                       : "controller")
          << "\n"
          << "node.id=" << m.node_id << "\ncontroller.quorum.voters=" << quorum << "\nlisteners=" << listeners
          << "\ncontroller.listener.names=CONTROLLER\nlistener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n";
    cfg << (m.broker ? "advertised.listeners=PLAINTEXT://127.0.0.1:" + std::to_string(port) + "\ninter.broker.listener.name=PLAINTEXT\n"
                     : std::string())
        << "log.dirs=" << dirs << "\n"
        << (m.metadata_dir.empty() ? std::string() : "metadata.log.dir=" + m.metadata_dir + "\n")
        // Nothing aged out or cleaned while the drill reads: the broker's
        // retention and cleaner never run in its time.
        << "log.retention.check.interval.ms=86400000\nlog.cleaner.enable=false\nauto.create.topics.enable=false\n"
        << "group.initial.rebalance.delay.ms=0\n";
    if (m.broker) bootstrap += (bootstrap.empty() ? "" : ",") + std::string("127.0.0.1:") + std::to_string(port);
    const std::string log = dir + "/server.log";
    servers.emplace_back(
        box.spawn_server({d.java, "-Xmx" + std::to_string(d.java_heap_mb) + "m", "-Xms64m", "-XX:-UsePerfData",
                          "-Djava.io.tmpdir=" + box.tmp_dir(), "-Dlog4j2.configurationFile=" + box.dir() + "/log4j2.properties",
                          "-Dlog4j.configuration=file:" + box.dir() + "/log4j.properties", "-Dkafka.logs.dir=" + dir, "-cp", libs + "/*",
                          "kafka.Kafka", dir + "/server.properties"},
                         log),
        log);
  }
  if (bootstrap.empty()) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the set holds no broker's snapshot (controllers only): nothing serves the topics");
    return;
  }
  // Every partition the backups recorded (KRaft's own log aside), with the
  // highest high watermark any replica recorded for it: what a whole-cluster
  // restore's verify asks of each broker (agent/drivers/kafka).
  std::map<std::string, int64_t> recorded_hw;
  for (const auto& m : members)
    for (const auto& [name, pos] : m.partitions.items()) {
      if (name.rfind("__cluster_metadata", 0) == 0) continue;
      int64_t hw = pos.is_array() && pos.size() == 3 && pos[2].is_number_integer() ? pos[2].get<int64_t>() : -1;
      auto [it, fresh] = recorded_hw.emplace(name, hw);
      if (!fresh) it->second = std::max(it->second, hw);
    }
  kafka::Settings s;
  s.bootstrap = bootstrap;
  kafka::BrokerClient client(s);
  std::set<int32_t> want_brokers;
  for (const auto& m : members)
    if (m.broker) want_brokers.insert(int32_t(std::stoi(m.node_id)));
  std::optional<kafka::ClusterView> view;
  auto until = Clock::now() + std::chrono::seconds(d.start_timeout_seconds);
  std::string last = "no answer";
  bool ready = false;
  // Brokers register before they know every topic (in ZooKeeper mode the
  // controller sends them the partitions after it is elected): a recorded
  // partition the cluster does not know yet is waited for, up to 30 s once
  // every broker is registered; then the checks name what is missing.
  std::optional<Clock::time_point> all_registered;
  while (Clock::now() < until && !(cancel && cancel->load()) && !ready) {
    for (size_t i = 0; i < servers.size(); ++i) {
      int status = 0;
      if (!box.running(servers[i].first, &status)) {
        const std::string what = "Kafka node " + members[i].node_id;
        rep.fail(v1::ERROR_CODE_VERIFY_FAILED, what + " " + drill_exit_account(d, box, status, servers[i].second, what));
        rep.check("every node starts on the restored log dirs", "running", what + " exited", false);
        return;
      }
    }
    try {
      auto v = client.describe(std::chrono::seconds(5));
      std::set<int32_t> up(v.brokers.begin(), v.brokers.end());
      size_t leaderless = 0, known = 0;
      for (const auto& p : v.partitions)
        if (recorded_hw.count(p.topic + "-" + std::to_string(p.partition))) {
          ++known;
          if (p.leader < 0) ++leaderless;
        }
      const bool registered = std::includes(up.begin(), up.end(), want_brokers.begin(), want_brokers.end());
      if (registered && !all_registered) all_registered = Clock::now();
      if (!registered)
        last = std::to_string(up.size()) + " of " + std::to_string(want_brokers.size()) + " brokers registered";
      else if (leaderless)
        last = std::to_string(leaderless) + " partition(s) without a leader";
      else if (known < recorded_hw.size() && Clock::now() - *all_registered < std::chrono::seconds(30))
        last = std::to_string(recorded_hw.size() - known) + " recorded partition(s) not known to the brokers yet";
      else
        ready = true, view = std::move(v);
    } catch (const Error& e) {
      last = e.what();
    }
    if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  rep.phases["start"] = seconds_since(t);
  rep.check("every broker registered and every partition led", "serving", ready ? "serving" : "not serving: " + last, ready);
  if (!ready) return;
  t = Clock::now();
  phase("check");
  rep.check("cluster id", cluster_id, view->cluster_id, view->cluster_id == cluster_id);
  std::map<std::string, const kafka::PartitionView*> known;
  for (const auto& p : view->partitions) known[p.topic + "-" + std::to_string(p.partition)] = &p;
  std::map<std::string, std::pair<std::string, int32_t>> names;
  std::map<std::string, int64_t> ends;
  std::vector<std::string> unknown, behind;
  for (const auto& [name, hw] : recorded_hw) {
    auto it = known.find(name);
    if (it == known.end()) {
      unknown.push_back(name);
      continue;
    }
    auto [lo, hi] = client.watermarks(it->second->topic, it->second->partition, std::chrono::seconds(10));
    (void)lo;
    if (hi < hw) behind.push_back(name + " (high watermark " + std::to_string(hi) + ", recorded " + std::to_string(hw) + ")");
    names[name] = {it->second->topic, it->second->partition};
    ends[name] = hi;
  }
  rep.check("partitions the backup recorded, known to the cluster", recorded_hw.size(),
            std::to_string(recorded_hw.size() - unknown.size()) + (unknown.empty() ? std::string() : "; missing: " + unknown.front()),
            unknown.empty());
  rep.check("partitions served up to their recorded high watermark", recorded_hw.size() - unknown.size(),
            std::to_string(recorded_hw.size() - unknown.size() - behind.size()) +
                (behind.empty() ? std::string() : "; behind: " + behind.front()),
            behind.empty());
  // Every record up to the high watermark read back, CRCs checked.
  auto read = read_partitions(bootstrap, names, ends, cancel, std::chrono::seconds(std::max<int64_t>(60, d.start_timeout_seconds)));
  int64_t records = 0, bytes = 0;
  std::vector<std::string> short_reads;
  for (const auto& [name, r] : read) {
    records += r.records;
    bytes += r.bytes;
    if (ends[name] > 0 && (!r.error.empty() || r.reached < ends[name]))
      short_reads.push_back(
          name + (r.error.empty() ? " read to offset " + std::to_string(r.reached) + " of " + std::to_string(ends[name]) : ": " + r.error));
  }
  rep.check("every record read to the high watermark, CRCs checked", "every partition",
            short_reads.empty() ? std::to_string(records) + " records, " + std::to_string(bytes) + " bytes in " +
                                      std::to_string(read.size()) + " partitions"
                                : std::to_string(short_reads.size()) + " partition(s) short: " + short_reads.front(),
            short_reads.empty());
  rep.phases["check"] = seconds_since(t);
}

}  // namespace drill_internal

namespace kafka {

namespace {

// Every broker's snapshot of a cluster as one drill (docs/drills.md § Kafka),
// with the set's ZooKeeper beside them in ZooKeeper mode.
class KafkaDrill : public DriverDrill {
 public:
  drill_internal::KafkaDrillKeys keys_;
  nlohmann::json keys() const override {
    return {{"kafka_libs_dir", keys_.kafka_libs_dir}, {"kafka_zookeeper_libs_dir", keys_.kafka_zookeeper_libs_dir}};
  }
  std::string tools_missing(const DrillDecl& d) const override {
    bool jar = !drill_internal::kafka_libs_version(keys_.kafka_libs_dir).empty() ||
               (!keys_.kafka_zookeeper_libs_dir.empty() && !drill_internal::kafka_libs_version(keys_.kafka_zookeeper_libs_dir).empty());
    if (!jar) return "no Kafka jar in '" + keys_.kafka_libs_dir + "' ([drill] kafka_libs_dir)";
    if (!platform::find_program(d.java)) return "'" + d.java + "' ([drill] java) is not found";
    return {};
  }
  // The brokers' snapshots + 256 MiB per broker (what they write beside their logs).
  uint64_t disk_needed(const std::vector<repo::Snapshot>& snaps) const override {
    uint64_t size = 0;
    for (const auto& s : snaps) size += s.summary.value("bytes_total", uint64_t(0));
    return size + snaps.size() * (256ull << 20);
  }
  bool cluster_drill() const override { return true; }
  void run(DrillRun& r) const override {
    const size_t brokers = r.members;
    std::vector<repo::Snapshot> broker_snaps(r.snaps.begin(), r.snaps.begin() + long(brokers));
    std::vector<std::string> broker_roots(r.roots.begin(), r.roots.begin() + long(brokers));
    drill_internal::drill_kafka(r.decl, keys_, r.box, broker_snaps, broker_roots, brokers < r.snaps.size() ? &r.snaps.back() : nullptr,
                                brokers < r.snaps.size() ? r.roots.back() : std::string(), r.rep, r.cancel, r.phase);
  }
};

}  // namespace

std::shared_ptr<const DriverDrill> make_drill(TableReader* dr) {
  auto d = std::make_shared<KafkaDrill>();
  if (!dr) return d;
  d->keys_.kafka_libs_dir = dr->string_or("kafka_libs_dir", d->keys_.kafka_libs_dir);
  require_absolute(*dr, "kafka_libs_dir", d->keys_.kafka_libs_dir);
  d->keys_.kafka_zookeeper_libs_dir = dr->string_or("kafka_zookeeper_libs_dir", "");
  if (!d->keys_.kafka_zookeeper_libs_dir.empty()) require_absolute(*dr, "kafka_zookeeper_libs_dir", d->keys_.kafka_zookeeper_libs_dir);
  return d;
}

}  // namespace kafka

}  // namespace cairn::agent
