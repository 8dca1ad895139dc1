// A 3-server ZooKeeper ensemble restored step by step, by hand, as the
// controller's cluster restore does it: one backup taken on member 1; then
// stop on every member, data on every member (all from member 1's snapshot),
// start on every member, verify on every member, each through the agent's real
// task runner with its own configuration. The tree is back on every server,
// each keeps its myid, one leader. Then a rollback: data swapped in on every
// member, rolled back, started: the data written after the backup is back.
// Real servers from Debian's zookeeper package, started through
// tests/integration/servers_zookeeper.py; skipped (with a warning) without them.
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/config.h"
#include "agent/drivers/zookeeper/four_letter.h"
#include "agent/task_admission.h"
#include "agent/task_runner.h"
#include "common/repo/repository.h"
#include "common/repo/storage/backend.h"
#include "tests/unit/agent/agent_fixture.h"

namespace fs = std::filesystem;
using namespace cairn;
using namespace cairn::agent;
namespace v1 = cairn::v1;
using namespace std::chrono_literals;

namespace {

const std::string kServers = CAIRN_ZK_SERVERS_PY;
const char* kCli = "/usr/share/zookeeper/bin/zkCli.sh";

bool have_zookeeper() {
  return fs::exists("/usr/share/java/zookeeper.jar") && fs::exists(kCli) &&
         std::system("command -v java >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1") == 0;
}

using cairn::agent::test::free_port;

// One four-letter word, "" when nothing answers in 5 s (the driver's own
// bounded client).
std::string ask(int port, const std::string& word) {
  try {
    return zookeeper::four_letter("127.0.0.1:" + std::to_string(port), word, 5s);
  } catch (const std::exception&) {
    return "";
  }
}

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

struct Member {
  int myid;
  std::string dir, data, cfg;
  int port, peer, election;
  void service(const std::string& what) const { REQUIRE(std::system(("python3 " + kServers + " " + what + " " + dir).c_str()) == 0); }
  std::string mode() const {
    try {
      return zookeeper::parse_srvr(ask(port, "srvr")).mode;
    } catch (...) {
      return "";
    }
  }
  void wait_serving() const {
    auto deadline = std::chrono::steady_clock::now() + 120s;
    while (mode() != "leader" && mode() != "follower") {
      REQUIRE(std::chrono::steady_clock::now() < deadline);
      std::this_thread::sleep_for(200ms);
    }
  }
  // zkCli.sh commands in one session; the lines that are not its chatter.
  std::vector<std::string> cli(const std::vector<std::string>& cmds) const {
    std::string script = dir + "/cli.txt", out = dir + "/cli.out";
    {
      std::ofstream f(script);
      for (const auto& c : cmds) f << c << "\n";
      f << "quit\n";
    }
    // Its exit status is the last command's (a missing znode is 1): the output tells.
    // zkCli retries a connection it cannot make for ever: bounded by timeout(1).
    (void)std::system(
        ("timeout -k 5 120 " + std::string(kCli) + " -server 127.0.0.1:" + std::to_string(port) + " < " + script + " > " + out + " 2>&1")
            .c_str());
    std::vector<std::string> lines;
    std::istringstream in(slurp(out));
    for (std::string l; std::getline(in, l);) {
      if (l.empty() || l.rfind("Connecting to", 0) == 0 || l.rfind("Welcome to", 0) == 0 || l.rfind("JLine", 0) == 0 ||
          l.rfind("WATCHER::", 0) == 0 || l.rfind("WatchedEvent", 0) == 0 || l.rfind("SLF4J:", 0) == 0 || l.rfind("Created /", 0) == 0 ||
          l.rfind("Sync is OK", 0) == 0)
        continue;
      lines.push_back(l);
    }
    return lines;
  }
};

struct Ensemble {
  std::string base;
  std::vector<Member> m;
  Ensemble() {
    char tmpl[] = "/tmp/cairn-zk-ens-XXXXXX";
    base = ::mkdtemp(tmpl);
    for (int i = 1; i <= 3; ++i) {
      Member x{i, base + "/zk" + std::to_string(i), "", "", free_port(), free_port(), free_port()};
      x.data = x.dir + "/data";
      x.cfg = x.dir + "/zoo.cfg";
      fs::create_directories(x.data);
      std::ofstream(x.data + "/myid") << i << "\n";
      m.push_back(x);
    }
    for (auto& x : m) {
      std::ofstream f(x.cfg);
      f << "tickTime=500\ninitLimit=20\nsyncLimit=10\ndataDir=" << x.data << "\nclientPort=" << x.port
        << "\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=srvr,mntr,ruok\n"
           "snapCount=50\n";
      for (auto& y : m) f << "server." << y.myid << "=127.0.0.1:" << y.peer << ":" << y.election << "\n";
    }
  }
  ~Ensemble() {
    for (auto& x : m) std::system(("python3 " + kServers + " stop " + x.dir + " >/dev/null 2>&1").c_str());
    fs::remove_all(base);
  }
};

// An agent (configuration + runner) for one member, all sharing one repository.
struct Agent {
  AgentConfig config;
  std::vector<v1::AgentMessage> sent;
  std::unique_ptr<TaskRunner> runner;
  Agent(const Ensemble& e, const Member& x) {
    std::string text = "name = \"node-" + std::to_string(x.myid) + "\"\nstate_dir = \"" + x.dir +
                       "/agent-state\"\n[controller]\nendpoint = \"tcp://127.0.0.1:7600\"\n"
                       "public_key = \"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\"\nsigning_keys_file = \"" +
                       e.base + "/signing.pub\"\n[[repository]]\nname = \"main\"\npath = \"" + e.base + "/repo\"\npassword_file = \"" +
                       e.base +
                       "/repo.pass\"\n[[component]]\nname = \"zookeeper\"\n"
                       "driver = \"zookeeper\"\ndata_dir = \"" +
                       x.data + "\"\nconfig_file = \"" + x.cfg +
                       "\"\nready_timeout_seconds = 120\nservice = { start_command = [\"/usr/bin/env\", \"python3\", \"" + kServers +
                       "\", \"start\", \"" + x.dir + "\"], stop_command = [\"/usr/bin/env\", \"python3\", \"" + kServers +
                       "\", \"stop\", \"" + x.dir + "\"], timeout_seconds = 60 }\n";
    config = parse_config(text, "agent-" + std::to_string(x.myid) + ".toml");
    runner = std::make_unique<TaskRunner>([this](v1::AgentMessage msg) { sent.push_back(std::move(msg)); });
  }
  v1::TaskResult run(v1::Task t) {
    Admission a = admit_task(config, "plan-" + t.task_id(), t);
    INFO("admission of " << t.task_id());
    REQUIRE(a.task);
    return runner->run(*a.task);
  }
};

std::string why(const v1::TaskResult& r) {
  std::string s;
  for (const auto& x : r.reasons()) s += x.detail() + "; ";
  return s;
}

v1::Task restore_task(const std::string& id, const std::string& snapshot, const std::string& step) {
  v1::Task t;
  t.set_task_id(id);
  t.set_component("zookeeper");
  t.set_kind(v1::TASK_KIND_RESTORE);
  t.set_restore_id("rs-" + id.substr(0, id.find('-')));  // every record of the restore names it
  t.mutable_snapshot()->set_snapshot_id(snapshot);
  t.mutable_options()->set_restore_step(step);
  return t;
}

}  // namespace

TEST_CASE("zookeeper ensemble: every member restored from one member's backup, step by step", "[zookeeper][ensemble]") {
  if (!have_zookeeper()) {
    WARN("ZooKeeper, java or python3 is not installed: skipped");
    return;
  }
  Ensemble e;
  {
    std::ofstream(e.base + "/repo.pass") << "correct horse\n";
    fs::permissions(e.base + "/repo.pass", fs::perms::owner_read | fs::perms::owner_write);
    std::ofstream(e.base + "/signing.pub") << "# none\n";
    auto be = repo::make_fs_backend(e.base + "/repo");
    repo::InitOptions io;
    io.kdf = repo::KdfParams{.scrypt = {1024, 8, 1}};
    repo::Repository::init(*be, repo::Secret(repo::Secret::Kind::passphrase, "correct horse"), io);
  }
  for (auto& x : e.m) x.service("start");
  for (auto& x : e.m) x.wait_serving();

  std::vector<std::string> create = {"create /app root"}, get;
  std::vector<std::string> values;
  for (int i = 0; i < 25; ++i) {
    create.push_back("create /app/n" + std::to_string(i) + " value-" + std::to_string(i));
    get.push_back("get /app/n" + std::to_string(i));
    values.push_back("value-" + std::to_string(i));
  }
  e.m[0].cli(create);

  std::vector<std::unique_ptr<Agent>> agents;
  for (auto& x : e.m) agents.push_back(std::make_unique<Agent>(e, x));
  // Every member names the same ensemble.
  CHECK(agents[0]->config.components[0].driver->capabilities().cluster_id ==
        agents[2]->config.components[0].driver->capabilities().cluster_id);
  CHECK(agents[1]->config.components[0].driver->capabilities().member_id == "2");

  v1::Task b;
  b.set_task_id("backup-1");
  b.set_component("zookeeper");
  b.set_kind(v1::TASK_KIND_BACKUP);
  b.set_backup_set_id("bs-1");
  v1::TaskResult br = agents[0]->run(b);
  INFO(why(br));
  REQUIRE(br.outcome() == v1::TASK_OUTCOME_SUCCEEDED);
  const std::string snap = br.snapshot_id();

  e.m[1].cli({"deleteall /app", "create /after-backup x"});
  CHECK(e.m[2].cli({"sync /", "get /app"}) == std::vector<std::string>{"Node does not exist: /app"});

  auto all = [&](const std::string& prefix, const std::string& step) {
    for (size_t i = 0; i < agents.size(); ++i) {
      v1::TaskResult r = agents[i]->run(restore_task(prefix + "-" + step + "-" + std::to_string(i + 1), snap, step));
      INFO("member " << i + 1 << ", step " << step << ": " << why(r));
      REQUIRE(r.outcome() == v1::TASK_OUTCOME_SUCCEEDED);
    }
  };
  for (const char* step : {"stop", "data", "start", "verify"}) all("1", step);

  int leaders = 0;
  for (auto& x : e.m) {
    x.wait_serving();
    leaders += x.mode() == "leader";
    CHECK(slurp(x.data + "/myid") == std::to_string(x.myid) + "\n");
    INFO("member " << x.myid);
    CHECK(x.cli(get) == values);
    CHECK(x.cli({"get /after-backup"}) == std::vector<std::string>{"Node does not exist: /after-backup"});
  }
  CHECK(leaders == 1);

  all("1", "commit");  // the first restore is over: its records go, what it set aside stays

  {  // rollback puts every member's data back, and starts it
    e.m[0].cli({"create /after-restore y"});
    all("2", "preflight");
    all("2", "stop");
    // Member 3's data step never runs (its agent was lost): its rollback
    // finds no record of restore 2 and only starts the server on its data.
    for (size_t i = 0; i + 1 < agents.size(); ++i) {
      v1::TaskResult r = agents[i]->run(restore_task("2-data-" + std::to_string(i + 1), snap, "data"));
      REQUIRE(r.outcome() == v1::TASK_OUTCOME_SUCCEEDED);
    }
    for (size_t i = 0; i < agents.size(); ++i) {
      v1::TaskResult r = agents[i]->run(restore_task("2-rollback-" + std::to_string(i + 1), snap, "rollback"));
      INFO(why(r));
      REQUIRE(r.outcome() == v1::TASK_OUTCOME_SUCCEEDED);
    }
    for (auto& x : e.m) x.wait_serving();
    for (auto& x : e.m) CHECK(x.cli({"sync /", "get /after-restore"}) == std::vector<std::string>{"y"});
  }

  {  // a rollback never acts on another restore's record: restore 3 leaves
     // one on every member (no commit), restore 4's rollback must not undo it
    all("3", "stop");
    all("3", "data");
    all("3", "start");
    for (auto& x : e.m) x.wait_serving();
    for (auto& x : e.m) CHECK(x.cli({"sync /", "get /after-restore"}) == std::vector<std::string>{"Node does not exist: /after-restore"});
    e.m[0].cli({"create /after-restore-3 z"});
    all("4", "stop");
    all("4", "rollback");  // restore 4's data step never ran anywhere
    for (auto& x : e.m) x.wait_serving();
    for (auto& x : e.m) {
      INFO("member " << x.myid);
      CHECK(x.cli({"sync /", "get /after-restore-3"}) == std::vector<std::string>{"z"});  // still restore 3's data, and what came after
    }
  }
}
