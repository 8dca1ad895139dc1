// cairn-etcd-steps: a test tool, never installed. It runs the etcd driver
// on this host the way the agent's task runner does, one call per run, so a
// test can drive the steps of a cluster restore (stop, data, start, verify,
// rollback) on several members by hand, before the controller orchestrates
// them (tests/integration/test_etcd.py).
//
//   cairn-etcd-steps --settings FILE --repo DIR --password-file FILE backup --metadata-out FILE
//       prints the snapshot id; FILE gets the metadata the driver recorded
//   cairn-etcd-steps ... restore --snapshot ID --step STEP [--option KEY=VALUE]...
//   cairn-etcd-steps ... verify --recorded FILE
// The settings file holds the driver's keys of a [[component]] table at its
// top level. restore and verify print the result as JSON and exit 0 when it
// succeeded, 1 when not, 2 on a usage error.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>

#include "agent/config_reader.h"
#include "agent/drivers/etcd/config.h"
#include "agent/drivers/etcd/etcd_driver.h"
#include "common/repo/archiver.h"
#include "common/repo/repository.h"
#include "common/repo/storage/backend.h"
#include "common/util/error.h"
#include "common/util/fs.h"

using namespace cairn;
using namespace cairn::agent;

namespace {

// What the runner's sink does, reduced to one stream or paths.
class ToolSink : public SnapshotSink {
 public:
  void add_path(const std::string& real_path, const std::string&) override { paths.push_back(real_path); }
  void exclude(const std::string&) override {}
  void immutable_links() override {}
  void add_stream(const std::string& name, std::function<void(int)> p) override {
    stream_name = name;
    producer = std::move(p);
  }
  void set_metadata(nlohmann::json m) override {
    std::lock_guard lk(mu);
    metadata = std::move(m);
  }
  void add_reason(cairn::v1::Reason r) override { reasons.push_back(r.detail()); }
  void on_done(std::function<void()> f) override { cleanups.push_back(std::move(f)); }

  std::vector<std::string> paths, reasons;
  std::string stream_name;
  std::function<void(int)> producer;
  std::mutex mu;
  nlohmann::json metadata;
  std::vector<std::function<void()>> cleanups;
};

nlohmann::json result_json(const DriverResult& r) {
  nlohmann::json reasons = nlohmann::json::array();
  for (const auto& x : r.reasons) reasons.push_back({{"code", int(x.code())}, {"detail", x.detail()}, {"item", x.item()}});
  return {
      {"outcome", r.outcome == cairn::v1::TASK_OUTCOME_SUCCEEDED ? "succeeded" : "failed"}, {"reasons", reasons}, {"metadata", r.metadata}};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"drive the etcd driver by hand (tests only)"};
  std::string settings_file, repo_dir, password_file;
  app.add_option("--settings", settings_file)->required();
  app.add_option("--repo", repo_dir)->required();
  app.add_option("--password-file", password_file)->required();
  app.require_subcommand(1);
  std::string metadata_out, snapshot_id, step = "all", recorded_file;
  std::vector<std::string> options;
  auto* backup = app.add_subcommand("backup");
  backup->add_option("--metadata-out", metadata_out)->required();
  auto* restore = app.add_subcommand("restore");
  restore->add_option("--snapshot", snapshot_id)->required();
  restore->add_option("--step", step);
  // The restore the steps belong to: the record the data step leaves names it
  // and only steps of the same restore act on it.
  std::string restore_id = "steps";
  restore->add_option("--restore-id", restore_id);
  restore->add_option("--option", options);
  auto* verify = app.add_subcommand("verify");
  verify->add_option("--recorded", recorded_file);
  CLI11_PARSE(app, argc, argv);

  try {
    toml::table t = toml::parse_file(settings_file);
    TableReader r(t, settings_file, "settings");
    auto driver = etcd::make_driver(r, "etcd");
    r.finish();

    auto be = repo::make_fs_backend(repo_dir);
    auto repository = repo::Repository::open(std::move(be), repo::Secret(repo::Secret::Kind::passphrase, read_secret_file(password_file)));
    repository->load_index();

    std::atomic<bool> cancel{false};
    TaskContext ctx;
    ctx.component = "etcd";
    ctx.repo = repository.get();
    ctx.cancel = &cancel;
    ctx.note = [](const std::string& s) { std::fprintf(stderr, "note: %s\n", s.c_str()); };

    if (backup->parsed()) {
      ToolSink sink;
      driver->snapshot(ctx, sink, SnapshotPurpose{});
      repo::BackupOptions bo;
      bo.tags = {"component=etcd"};
      std::array<int, 2> fds = {-1, -1};
      std::thread producer;
      std::exception_ptr failure;
      if (sink.producer) {
        fds = stream_pipe();  // as the agent's task runner makes it
        producer = std::thread([&] {
          try {
            sink.producer(fds[1]);
          } catch (...) {
            failure = std::current_exception();
          }
          ::close(fds[1]);
        });
        bo.stdin_name = sink.stream_name;
        bo.stdin_fd = fds[0];
        // The snapshot is written only when the stream was whole and checked.
        bo.check_lock = [&] {
          if (producer.joinable()) producer.join();
          if (failure) std::rethrow_exception(failure);
          bo.component_metadata = sink.metadata;  // as completed at the stream's end
        };
      } else {
        bo.paths = sink.paths;
        bo.component_metadata = sink.metadata;
      }
      repo::BackupResult res;
      try {
        res = repo::backup(*repository, bo);
      } catch (...) {
        if (producer.joinable()) {
          ::close(fds[0]);
          fds[0] = -1;
          producer.join();
        }
        if (failure) std::rethrow_exception(failure);
        throw;
      }
      if (fds[0] >= 0) ::close(fds[0]);
      for (auto& f : sink.cleanups) f();
      std::ofstream(metadata_out) << sink.metadata.dump(2) << "\n";
      std::printf("%s\n", res.snapshot.id.c_str());
      return 0;
    }
    if (restore->parsed()) {
      RestoreSpec spec;
      spec.snapshot_id = snapshot_id;
      if (auto parsed = proto::restore_step_from_name(step == "all" ? "" : step))
        spec.step = *parsed;
      else {
        std::fprintf(stderr, "cairn-etcd-steps: unknown step '%s'\n", step.c_str());
        return 2;
      }
      for (const auto& o : options) {
        auto eq = o.find('=');
        if (eq == std::string::npos) {
          std::fprintf(stderr, "cairn-etcd-steps: --option '%s' is not KEY=VALUE\n", o.c_str());
          return 2;
        }
        spec.cluster_options[o.substr(0, eq)] = o.substr(eq + 1);
      }
      ctx.restore_id = restore_id;
      DriverResult res = spec.step == v1::RESTORE_STEP_PREFLIGHT ? DriverResult{}
                         : spec.step == v1::RESTORE_STEP_COMMIT  ? driver->restore_commit(ctx, spec)
                                                                 : driver->restore(ctx, spec);
      if (spec.step == v1::RESTORE_STEP_PREFLIGHT) {
        res.reasons = driver->restore_preflight(ctx, spec);
        res.outcome = res.reasons.empty() ? cairn::v1::TASK_OUTCOME_SUCCEEDED : cairn::v1::TASK_OUTCOME_FAILED;
      }
      std::printf("%s\n", result_json(res).dump().c_str());
      return res.outcome == cairn::v1::TASK_OUTCOME_SUCCEEDED ? 0 : 1;
    }
    nlohmann::json recorded = nlohmann::json::object();
    if (!recorded_file.empty()) {
      std::ifstream in(recorded_file);
      recorded = nlohmann::json::parse(in);
    }
    DriverResult res;
    res.reasons = driver->verify(ctx, recorded);
    res.outcome = res.reasons.empty() ? cairn::v1::TASK_OUTCOME_SUCCEEDED : cairn::v1::TASK_OUTCOME_FAILED;
    std::printf("%s\n", result_json(res).dump().c_str());
    return res.reasons.empty() ? 0 : 1;
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "cairn-etcd-steps: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cairn-etcd-steps: %s\n", e.what());
    return 1;
  }
}
