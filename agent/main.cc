// cairn-agent: runs on every node, next to the data. Loads its declared
// components, holds its CURVE keypair, verifies signed plans and runs them.
#include <malloc.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "agent/config.h"
#include "agent/curve_identity.h"
#include "agent/drill_task.h"
#include "agent/drivers/files/files_driver.h"
#include "agent/drivers/postgresql/wal_archive.h"
#include "agent/failpoint.h"
#include "agent/plan_gate.h"
#include "agent/session.h"
#include "agent/set_aside.h"
#include "agent/systemd_notify.h"
#include "agent/task_runner.h"
#include "cairn/version.h"
#include "common/repo/memory.h"
#include "common/repo/repository.h"
#include "common/repo/storage/registry.h"
#include "common/util/cpus.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "common/util/terminal_text.h"

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) { g_stop = true; }

// The keeper of what restores set aside; a snapshot is looked for in the
// component's repository.
std::unique_ptr<cairn::agent::SetAsideKeeper> make_keeper(const cairn::agent::AgentConfig& config,
                                                          const cairn::agent::RestoreJournal& journal, cairn::agent::TaskRunner& runner) {
  std::vector<cairn::agent::SetAsideKeeper::Component> comps;
  for (const auto& c : config.components) comps.push_back({c.name, c.driver.get()});
  auto k =
      std::make_unique<cairn::agent::SetAsideKeeper>(config.state_dir + "/set-aside.json", config.set_aside, std::move(comps), &journal);
  k->set_snapshot_check([&config, &runner](const std::string& component, const std::string& id) -> std::optional<bool> {
    const auto* c = config.component(component);
    const auto* r = c ? config.repository(c->repository) : nullptr;
    if (!r) return std::nullopt;
    return runner.holds_snapshot(*r, id);
  });
  return k;
}

// Seconds between looks without a task (CAIRN_SET_ASIDE_INTERVAL_S, for tests; default an hour).
int64_t set_aside_interval() {
  const char* v = std::getenv("CAIRN_SET_ASIDE_INTERVAL_S");
  const long long s = v ? std::atoll(v) : 0;
  return s >= 1 && s <= 86400 ? s : 3600;
}

std::string size_text(uint64_t b) { return cairn::repo::byte_size_text(b); }

// cairn-agent set-aside list|remove: on this host, beside the running agent.
int set_aside_main(const cairn::agent::AgentConfig& config, const std::string& action, const std::string& path, bool all, bool force) {
  using namespace cairn::agent;
  RestoreJournal journal(config.state_dir + "/restores");
  TaskRunner runner(nullptr);
  auto keeper = make_keeper(config, journal, runner);
  if (action == "list") {
    auto copies = keeper->list();
    uint64_t total = 0;
    for (const auto& c : copies) {
      total += c.bytes;
      std::printf("%-12s %-7s %10s  %s  restore %s  %s\n", c.component.c_str(), kind_name(c.kind), size_text(c.bytes).c_str(),
                  cairn::utc_stamp(c.at).c_str(), c.restore_id.empty() ? "-" : c.restore_id.c_str(), cairn::terminal_safe(c.path).c_str());
      std::printf("%-12s %-7s %10s  kept: %s\n", "", "", "", c.keep.empty() ? "no (the rule removes it at the next look)" : c.keep.c_str());
    }
    std::printf("%zu cop%s, %s\n", copies.size(), copies.size() == 1 ? "y" : "ies", size_text(total).c_str());
    return 0;
  }
  if (path.empty() == !all) {
    std::fprintf(stderr, "cairn-agent: error: set-aside remove needs --path PATH or --all\n");
    return 2;
  }
  bool failed = false;
  for (const auto& line : keeper->remove(path, force, &failed)) std::printf("%s\n", cairn::terminal_safe(line).c_str());
  return failed ? 1 : 0;
}

int64_t unix_now() { return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count(); }

}  // namespace

int main(int argc, char** argv) {
  using namespace cairn::agent;
  // Backup chunk buffers (256 KiB to 4 MiB) come from mmap and go back to the
  // system when freed: a long-running agent's heap does not keep the
  // fragmented arenas of every backup it ran (as in cairnctl repo backup).
  mallopt(M_MMAP_THRESHOLD, 256 << 10);
  // Restores and mirror walks hold a directory descriptor per level of a tree
  // up to the depth limit (2,048): the usual soft limit of 1,024 descriptors
  // is raised to the hard limit (at most 65,536), as LimitNOFILE= would.
  if (rlimit rl{}; getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max < 65536 ? rl.rlim_max : 65536;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  CLI::App app{"cairn-agent: backs up and restores this node's declared components for the cairn controller"};
  std::string config_path = "/etc/cairn/agent.toml";
  bool check_only = false, print_key = false;
  app.add_option("--config,-c", config_path, "configuration file (TOML)")->capture_default_str();
  app.add_flag("--check-config", check_only, "check the configuration and exit");
  app.add_flag("--print-public-key", print_key, "print this agent's CURVE public key (creating the keypair if needed) and exit");
  app.set_version_flag("--version", std::string("cairn-agent ") + CAIRN_VERSION);
  // PostgreSQL's archive_command (docs/postgresql.md § WAL archive).
  auto* wal_push = app.add_subcommand("wal-push",
                                      "hand one WAL file to the running agent (PostgreSQL's archive_command); "
                                      "exits 0 only once it is stored in the repository");
  std::string wal_socket, wal_file;
  int64_t wal_timeout = 600;
  wal_push->add_option("--socket", wal_socket, "the component's archive_socket")->required();
  wal_push->add_option("file", wal_file, "the WAL file (%p)")->required();
  wal_push->add_option("--timeout", wal_timeout, "seconds to wait for the agent's answer")->capture_default_str();
  // What restores set aside (docs/set-aside.md): listed, or removed by hand.
  auto* aside = app.add_subcommand("set-aside",
                                   "list or remove what in-place restores set aside beside the declared "
                                   "data (<path>.cairn-old-*, .cairn-failed-*, .cairn-restore-*)");
  std::string aside_action, aside_path;
  bool aside_all = false, aside_force = false;
  aside->add_option("action", aside_action, "list | remove")->required()->check(CLI::IsMember({"list", "remove"}));
  aside->add_option("--path", aside_path, "remove: this copy only");
  aside->add_flag("--all", aside_all, "remove: every copy the rule does not need (with --force also only copies)");
  aside->add_flag("--force", aside_force, "remove: also a copy that is the only copy of its data (the repository does not hold it)");
  CLI11_PARSE(app, argc, argv);
  if (*wal_push) return cairn::agent::postgresql::wal_push_main(wal_socket, wal_file, std::chrono::seconds(wal_timeout));

  auto logger = spdlog::stderr_color_mt("cairn-agent");
  spdlog::set_default_logger(logger);
  // journald stamps every line; a second timestamp is noise there.
  spdlog::set_pattern(std::getenv("JOURNAL_STREAM") ? "%^%l%$: %v" : "%Y-%m-%dT%H:%M:%S.%e %^%l%$: %v");
  cairn::repo::set_storage_log([](const std::string& m) { spdlog::warn("storage: {}", m); });

  AgentConfig config;
  try {
    config = load_config(config_path);
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "cairn-agent: error: %s\n", e.what());
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  if (*aside) return set_aside_main(config, aside_action, aside_path, aside_all, aside_force);
  if (check_only) {
    // Missing paths and repositories are warnings: a mount may bring them later.
    auto warnings = config_warnings(config);
    for (const auto& w : warnings) std::fprintf(stderr, "cairn-agent: warning: %s\n", w.c_str());
    std::printf("configuration '%s' is valid: %zu components, %zu repositories%s\n", config_path.c_str(), config.components.size(),
                config.repositories.size(), warnings.empty() ? "" : ("; " + std::to_string(warnings.size()) + " warning(s) above").c_str());
    return 0;
  }

  SystemdNotifier notifier;
  try {
    bool created = false;
    CurveIdentity identity = load_or_create_identity(config.key_dir, &created);
    if (print_key) {
      std::printf("%s\n", identity.public_z85.c_str());
      return 0;
    }
    if (created)
      spdlog::info("created the agent keypair in '{}'; public key {}", config.key_dir, identity.public_z85);
    else
      spdlog::info("agent '{}', public key {}", config.name, identity.public_z85);
    if (std::string fp = failpoints_file(); !fp.empty())
      spdlog::warn(
          "fault injection is on (CAIRN_FAILPOINTS_FILE={}): restore steps may be failed or the agent killed "
          "on purpose; never set it outside tests",
          fp);
    // What every backup and restore is sized from, said once at start (docs/operations.md, "CPUs and memory").
    auto budget = cairn::repo::resolve_memory_budget(config.memory_budget, "memory_budget in " + config.source);
    {
      auto mem = cairn::cgroup_memory_limit();
      unsigned cpus = cairn::usable_cpus();
      spdlog::info(
          "CPUs for backups and restores: {}; cgroup memory limit: {}; memory budget: {}: up to {} backup "
          "threads, {} restore writers",
          cairn::cpu_limit().describe(), mem ? cairn::repo::byte_size_text(*mem) : std::string("none"), budget.describe(),
          cairn::repo::backup_threads(budget.bytes, cpus, cairn::repo::RepoParams{}.pack_size),
          cairn::repo::restore_writers(budget.bytes, cpus));
    }

    auto signing_keys = load_signing_keys(config.signing_keys_file);
    PlanGate gate(config.replay_journal, config.trust_store, signing_keys, identity.public_raw, unix_now());
    if (!gate.broken().empty()) spdlog::error("{}", gate.broken());

    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);

    Session* session_ptr = nullptr;
    std::unique_ptr<SetAsideKeeper> set_aside;  // outlives the runner's worker, which uses it
    TaskRunner runner(
        [&session_ptr](cairn::v1::AgentMessage m) {
          if (session_ptr) session_ptr->post(std::move(m));
        },
        config.state_dir + "/own-snapshots.json");
    runner.set_identity_tags({"agent:" + config.name, "agent-key:" + cairn::to_hex(identity.public_raw)});
    // Servers a restore set to maint before this agent stopped are put back first.
    MaintenanceMode maintenance(config.state_dir + "/maintenance.json");
    try {
      for (const auto& line : maintenance.recover()) spdlog::warn("{}", line);
    } catch (const std::exception& e) {
      spdlog::error("maintenance mode: {}", e.what());
    }
    runner.set_maintenance(&maintenance);
    RestoreJournal journal(config.state_dir + "/restores");
    runner.set_restore_journal(&journal);
    set_aside = make_keeper(config, journal, runner);
    runner.set_set_aside(set_aside.get(), set_aside_interval());
    runner.set_memory_budget(budget.bytes);
    // A files restore interrupted mid-write is undone from its safety snapshot.
    for (const auto& c : config.components)
      if (auto* f = dynamic_cast<files::FilesDriver*>(c.driver.get()))
        f->set_undo([f, &config, bytes = budget.bytes](const InPlaceRestore& r) {
          return undo_from_safety_snapshot(r, config.repositories, bytes,
                                           [f](TaskContext& ctx, const std::string& safety, const std::vector<std::string>& paths) {
                                             return f->restore_paths(ctx, safety, paths);
                                           });
        });
    if (config.drill) {
      // A drill's sandbox outlives a killed agent: removed before any task runs.
      for (const auto& gone : cairn::agent::clean_drill_root(*config.drill))
        spdlog::warn("drill: removed '{}', left by a drill that did not end", gone);
      runner.set_drill(&*config.drill);
    }
    // Services drivers run beside tasks (the postgresql WAL archive socket).
    for (const auto& c : config.components) {
      const RepositoryDecl* rd = config.repository(c.repository);
      if (!rd) continue;
      BackgroundContext bg;
      bg.store_file = [&runner, rd](const std::string& path, const std::string& read_from, const std::vector<std::string>& tags) {
        return runner.store_file(*rd, path, read_from, tags);
      };
      bg.private_dir = config.state_dir + "/background/" + c.name;
      bg.read_repository = [&runner, rd, name = c.name](const std::function<void(cairn::repo::Repository&)>& fn) {
        runner.read_repository(*rd, "check of " + name, fn);
      };
      try {
        c.driver->start_background(std::move(bg));
      } catch (const std::exception& e) {
        spdlog::error("component '{}': {}", c.name, e.what());
      }
    }
    Session session(config, identity, gate, runner, &notifier);
    session_ptr = &session;
    runner.start();
    notifier.ready();
    // An in-place restore this agent was stopped in the middle of: the
    // previous data put back and the service started on it before the
    // session runs (so before any plan is taken), after systemd was told the
    // agent is up (a database's start can outlast its start timeout); the
    // restore's task hears of it once the controller answers.
    if (!journal.load(nullptr).empty()) notifier.status("putting back what an interrupted restore changed");
    for (auto& r : recover_in_place_restores(journal, [&config](const std::string& name) -> Driver* {
           for (const auto& c : config.components)
             if (c.name == name) return c.driver.get();
           return nullptr;
         })) {
      cairn::v1::AgentMessage m;
      *m.mutable_task_result() = std::move(r);
      session.post(std::move(m));
    }
    // What earlier restores set aside, by the rule (after the undo above, which may have put some back).
    try {
      for (const auto& line : set_aside->sweep()) spdlog::info("set aside: {}", line);
    } catch (const std::exception& e) {
      spdlog::error("set aside: the rule could not be applied: {}", e.what());
    }
    notifier.status("running; " + std::to_string(config.components.size()) + " components declared");
    session.run(g_stop);
    spdlog::info("stopping");
    notifier.stopping();
    runner.stop();
    for (const auto& c : config.components) c.driver->stop_background();
    session_ptr = nullptr;
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "cairn-agent: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cairn-agent: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
