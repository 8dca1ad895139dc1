// cairn-bench-read-back: what the restore's read back (repo/verify.h, run in a
// cluster restore's preflight step before anything stops) costs against the
// restore itself, on one snapshot of a local repository (docs/benchmarks.md §
// Reading a snapshot back before a restore stops anything).
//
//   cairn-bench-read-back --repo DIR --password-file FILE --target DIR SNAPSHOT [--runs N] [--no-restore]
//
// Each run reads the snapshot back, then restores it into an empty
// TARGET/run-<i> (removed after). The page cache is left as it is: the read
// back warms it for the restore, as it does in the agent, where the restore
// follows the preflight within seconds. Prints one JSON line per run with
// both wall times and the read back's counts. --no-restore reads back only
// (for the read back's own peak RSS under /usr/bin/time -v).
#include <CLI/CLI.hpp>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/repo/restorer.h"
#include "common/repo/storage/backend.h"
#include "common/repo/verify.h"
#include "common/util/error.h"
#include "common/util/fs.h"

using namespace cairn;

int main(int argc, char** argv) {
  CLI::App app{"the cost of reading a snapshot back before a restore"};
  std::string repo_dir, password_file, target, snapshot;
  int runs = 3;
  bool no_restore = false;
  app.add_option("--repo", repo_dir)->required();
  app.add_option("--password-file", password_file)->required();
  app.add_option("--target", target)->required();
  app.add_option("--runs", runs);
  app.add_flag("--no-restore", no_restore);
  app.add_option("snapshot", snapshot)->required();
  CLI11_PARSE(app, argc, argv);
  try {
    auto r = repo::Repository::open(repo::make_fs_backend(repo_dir),
                                    repo::Secret(repo::Secret::Kind::passphrase, read_secret_file(password_file)));
    r->load_index();
    for (int i = 0; i < runs; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      repo::VerifyResult v = repo::verify_snapshot(*r, snapshot);
      auto t1 = std::chrono::steady_clock::now();
      repo::RestoreResult rr;
      if (!no_restore) {
        repo::RestoreOptions ro;
        ro.target = target + "/run-" + std::to_string(i);
        std::filesystem::remove_all(ro.target);
        rr = repo::restore(*r, snapshot, ro);
        std::filesystem::remove_all(ro.target);
      }
      auto t2 = std::chrono::steady_clock::now();
      nlohmann::json j = {{"run", i},
                          {"read_back_s", std::chrono::duration<double>(t1 - t0).count()},
                          {"restore_s", std::chrono::duration<double>(t2 - t1).count()},
                          {"bytes", v.bytes},
                          {"blobs", v.blobs},
                          {"trees", v.trees},
                          {"packs", v.packs},
                          {"bytes_read", v.bytes_read},
                          {"failures", v.failures.size() + v.failures_omitted},
                          {"restored_bytes", rr.bytes_restored},
                          {"restore_failures", rr.failures.size()}};
      std::cout << j.dump() << std::endl;
    }
  } catch (const Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
