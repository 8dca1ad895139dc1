// The files driver against a real repository: backup, then restore into the
// declared alternative target, with a safety snapshot first.
#include "agent/drivers/files/files_driver.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>

#include "agent/config.h"
#include "agent/task_admission.h"
#include "agent/task_runner.h"
#include "agent_fixture.h"
#include "common/repo/archiver.h"
#include "common/repo/repository.h"
#include "common/repo/snapshot.h"
#include "common/repo/storage/backend.h"

using namespace cairn;
using namespace cairn::agent;
using namespace cairn::agent::test;
namespace v1 = cairn::v1;

namespace {

void init_repo(const TempDir& d) {
  auto be = repo::make_fs_backend(d.file("repo"));
  repo::InitOptions io;
  io.kdf = repo::KdfParams{.scrypt = {1024, 8, 1}};
  repo::Repository::init(*be, repo::Secret(repo::Secret::Kind::passphrase, "correct horse"), io);
}

std::unique_ptr<repo::Repository> open_repo(const TempDir& d) {
  auto r = repo::Repository::open(repo::make_fs_backend(d.file("repo")), repo::Secret(repo::Secret::Kind::passphrase, "correct horse"));
  (void)r->load_index();
  return r;
}

AdmittedTask admitted(const AgentConfig& c, const v1::Task& t) {
  Admission a = admit_task(c, "plan-1", t);
  REQUIRE(a.task);
  return *a.task;
}

struct Fixture {
  TempDir d;
  AgentConfig config;
  std::vector<v1::AgentMessage> sent;
  TaskRunner runner{[this](v1::AgentMessage m) { sent.push_back(std::move(m)); }};

  Fixture() {
    write_text(d.file("data/a.conf"), "alpha\n");
    write_text(d.file("data/sub/b.bin"), std::string(300000, 'b'));
    init_repo(d);
    config = parse_config(base_config(d), "agent.toml");
  }

  v1::TaskResult backup() {
    v1::Task t;
    t.set_task_id("backup-1");
    t.set_component("data");
    t.set_kind(v1::TASK_KIND_BACKUP);
    t.set_backup_set_id("set-1");
    return runner.run(admitted(config, t));
  }
};

}  // namespace

TEST_CASE("files driver: backup then restore into restore_to gives the same bytes and keeps a safety snapshot") {
  Fixture f;
  v1::TaskResult b = f.backup();
  INFO((b.reasons_size() ? b.reasons(0).detail() : ""));
  REQUIRE(b.outcome() == v1::TASK_OUTCOME_SUCCEEDED);
  REQUIRE_FALSE(b.snapshot_id().empty());
  REQUIRE(b.manifest_digest() == b.snapshot_id());
  REQUIRE(b.files() == 2);
  REQUIRE(b.bytes() == 6 + 300000);
  // Progress went out, and the result last.
  REQUIRE(f.sent.size() >= 2);
  REQUIRE(f.sent.front().has_progress());
  REQUIRE(f.sent.back().has_task_result());

  {
    auto r = open_repo(f.d);
    auto s = repo::load_snapshot(*r, b.snapshot_id());
    for (const char* tag : {"component:data", "task:backup-1", "set:set-1"})
      REQUIRE(std::find(s.tags.begin(), s.tags.end(), tag) != s.tags.end());
  }

  // Damage the source; the restore goes to the declared alternative target.
  write_text(f.d.file("data/a.conf"), "damaged\n");
  v1::Task t;
  t.set_task_id("restore-1");
  t.set_component("data");
  t.set_kind(v1::TASK_KIND_RESTORE);
  t.mutable_snapshot()->set_snapshot_id(b.snapshot_id());
  t.mutable_options()->set_restore_target("alternate");
  t.mutable_options()->set_safety_backup_task_id("safety-1");
  v1::TaskResult r = f.runner.run(admitted(f.config, t));
  INFO((r.reasons_size() ? r.reasons(0).detail() : ""));
  REQUIRE(r.outcome() == v1::TASK_OUTCOME_SUCCEEDED);
  REQUIRE(r.snapshot_id() == b.snapshot_id());

  // Snapshot paths are recreated below the target.
  std::string alt = f.d.file("alt") + f.d.file("data");
  REQUIRE(read_text(alt + "/a.conf") == "alpha\n");
  REQUIRE(read_text(alt + "/sub/b.bin") == std::string(300000, 'b'));
  // The original place was not touched by a restore elsewhere.
  REQUIRE(read_text(f.d.file("data/a.conf")) == "damaged\n");

  // Nothing was at the target: nothing to save, and the safety backup says so.
  REQUIRE(r.safety_snapshot_id().empty());
  REQUIRE(r.safety_outcome() == v1::TASK_OUTCOME_SUCCEEDED);

  // The second restore there overwrites the first one's files: the safety
  // backup holds the target's copy, never the live source.
  write_text(alt + "/a.conf", "edited in the alternate target\n");
  t.set_task_id("restore-1b");
  r = f.runner.run(admitted(f.config, t));
  INFO((r.reasons_size() ? r.reasons(0).detail() : ""));
  REQUIRE(r.outcome() == v1::TASK_OUTCOME_SUCCEEDED);
  REQUIRE(read_text(alt + "/a.conf") == "alpha\n");
  REQUIRE_FALSE(r.safety_snapshot_id().empty());
  auto repo = open_repo(f.d);
  auto safety = repo::load_snapshot(*repo, r.safety_snapshot_id());
  REQUIRE(std::find(safety.tags.begin(), safety.tags.end(), "safety") != safety.tags.end());
  REQUIRE(std::find(safety.tags.begin(), safety.tags.end(), "task:safety-1") != safety.tags.end());
  REQUIRE(std::find(safety.tags.begin(), safety.tags.end(), "restore-target:alternate") != safety.tags.end());
  REQUIRE(safety.paths == std::vector<std::string>{alt});
}

TEST_CASE("files driver: in-place restore brings the data back, and skip_safety_backup skips the safety snapshot") {
  Fixture f;
  v1::TaskResult b = f.backup();
  REQUIRE(b.outcome() == v1::TASK_OUTCOME_SUCCEEDED);
  write_text(f.d.file("data/a.conf"), "damaged\n");
  std::filesystem::remove(f.d.file("data/sub/b.bin"));

  v1::Task t;
  t.set_task_id("restore-2");
  t.set_component("data");
  t.set_kind(v1::TASK_KIND_RESTORE);
  t.mutable_snapshot()->set_snapshot_id(b.snapshot_id());
  t.mutable_options()->set_skip_safety_backup(true);
  v1::TaskResult r = f.runner.run(admitted(f.config, t));
  INFO((r.reasons_size() ? r.reasons(0).detail() : ""));
  REQUIRE(r.outcome() == v1::TASK_OUTCOME_SUCCEEDED);
  REQUIRE(r.safety_snapshot_id().empty());
  REQUIRE(read_text(f.d.file("data/a.conf")) == "alpha\n");
  REQUIRE(read_text(f.d.file("data/sub/b.bin")) == std::string(300000, 'b'));
}

TEST_CASE("files driver: a snapshot holding undeclared paths is never restored") {
  Fixture f;
  // A snapshot of something else (as another agent or a cairnctl user could
  // write), tagged as if it were this component's.
  write_text(f.d.file("other/secret"), "not yours\n");
  std::string foreign;
  {
    auto r = open_repo(f.d);
    repo::BackupOptions bo;
    bo.paths = {f.d.file("other")};
    bo.tags = {"component:data"};
    foreign = repo::backup(*r, bo).snapshot.id;
  }
  v1::Task t;
  t.set_task_id("restore-3");
  t.set_component("data");
  t.set_kind(v1::TASK_KIND_RESTORE);
  t.mutable_snapshot()->set_snapshot_id(foreign);
  t.mutable_options()->set_restore_target("alternate");
  v1::TaskResult r = f.runner.run(admitted(f.config, t));
  REQUIRE(r.outcome() == v1::TASK_OUTCOME_FAILED);
  REQUIRE(r.reasons(0).code() == v1::ERROR_CODE_UNSUPPORTED_TASK);
  REQUIRE_THAT(r.reasons(0).detail(), Catch::Contains("does not declare"));
  REQUIRE_FALSE(std::filesystem::exists(f.d.file("alt") + f.d.file("other")));
}

TEST_CASE("files driver: a missing declared path makes the backup partial, never succeeded") {
  Fixture f;
  std::string text = base_config(f.d);
  text.replace(text.find("paths = [\""), 10, "paths = [\"" + f.d.file("missing") + "\", \"");
  f.config = parse_config(text, "agent.toml");
  v1::TaskResult b = f.backup();
  REQUIRE(b.outcome() == v1::TASK_OUTCOME_PARTIAL);
  REQUIRE(b.reasons(0).code() == v1::ERROR_CODE_ITEM_SKIPPED);
  REQUIRE(b.reasons(0).item() == f.d.file("missing"));
}

TEST_CASE("files driver: globs expand and cover only what they match") {
  files::Settings s;
  s.paths = {"/etc/kubernetes/*.conf", "/etc/kubernetes/pki"};
  files::FilesDriver drv("k8s", s);
  REQUIRE(drv.covers("/etc/kubernetes/admin.conf"));
  REQUIRE(drv.covers("/etc/kubernetes/pki/ca.key"));
  REQUIRE_FALSE(drv.covers("/etc/kubernetes/pki2"));
  REQUIRE_FALSE(drv.covers("/etc/kubernetes/sub/x.conf"));
  REQUIRE_FALSE(drv.covers("/etc/shadow"));
}

TEST_CASE("files driver: a declared path with glob characters that exists as written is taken literally") {
  TempDir d;
  write_text(d.file("app[1]/data/x.conf"), "x\n");
  write_text(d.file("app1/data/y.conf"), "y\n");  // what the pattern would match
  files::Settings s;
  s.paths = {d.file("app[1]/data")};
  files::FilesDriver drv("app", s);
  CHECK(drv.expand_paths() == std::vector<std::string>{d.file("app[1]/data")});
  CHECK(drv.covers(d.file("app[1]/data/x.conf")));
  CHECK_FALSE(drv.covers(d.file("app1/data/y.conf")));
  v1::Task backup_task;
  backup_task.set_kind(v1::TASK_KIND_BACKUP);
  CHECK(drv.preflight(backup_task).empty());
  // The same text naming nothing literally stays a pattern.
  files::Settings g;
  g.paths = {d.file("app[1]/other")};
  files::FilesDriver pat("app", g);
  CHECK(pat.expand_paths().empty());
}

TEST_CASE("files driver: mirror removes nothing when the snapshot is partial") {
  // What a partial backup could not read is absent from its tree: mirror would
  // take it for "added since the backup" and delete data never backed up.
  Fixture f;
  v1::TaskResult b = f.backup();
  REQUIRE(b.outcome() == v1::TASK_OUTCOME_SUCCEEDED);
  // The same snapshot as a backup that could not read one file would write it:
  // that file absent from the tree, named in errors, the snapshot partial.
  std::string partial_id;
  {
    auto r = open_repo(f.d);
    repo::Snapshot s = repo::load_snapshot(*r, b.snapshot_id());
    s.partial = true;
    s.errors.push_back({f.d.file("data/not-in-the-snapshot"), "cannot read: Permission denied"});
    repo::save_snapshot(*r, s);
    partial_id = s.id;
  }
  REQUIRE(partial_id != b.snapshot_id());
  write_text(f.d.file("data/not-in-the-snapshot"), "keep me\n");
  write_text(f.d.file("data/a.conf"), "damaged\n");

  v1::Task t;
  t.set_task_id("restore-4");
  t.set_component("data");
  t.set_kind(v1::TASK_KIND_RESTORE);
  t.mutable_snapshot()->set_snapshot_id(partial_id);
  t.mutable_options()->set_skip_safety_backup(true);
  v1::TaskResult r = f.runner.run(admitted(f.config, t));
  REQUIRE(r.outcome() == v1::TASK_OUTCOME_PARTIAL);
  REQUIRE(read_text(f.d.file("data/a.conf")) == "alpha\n");
  REQUIRE(read_text(f.d.file("data/not-in-the-snapshot")) == "keep me\n");
  bool said = false;
  for (const auto& why : r.reasons()) said |= why.detail().find("is partial") != std::string::npos;
  REQUIRE(said);
}
