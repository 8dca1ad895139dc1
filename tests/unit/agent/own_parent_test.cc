// The agent takes a backup's parent only as the plan names it, and only when it
// is a snapshot this agent wrote itself (agent/own_snapshots.h): a snapshot
// someone else wrote in this host's name, with these paths and tags, never
// lends its content to this agent's backups.
#include <catch2/catch.hpp>
#include <filesystem>

#include "agent/config.h"
#include "agent/own_snapshots.h"
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

struct ParentFixture {
  TempDir d;
  AgentConfig config;
  std::vector<v1::AgentMessage> sent;
  std::string record = d.file("state/own-snapshots.json");
  std::unique_ptr<TaskRunner> runner = make_runner();
  int n = 0;

  ParentFixture() {
    write_text(d.file("data/a.conf"), "alpha\n");
    write_text(d.file("data/sub/b.bin"), std::string(30000, 'b'));
    auto be = repo::make_fs_backend(d.file("repo"));
    repo::InitOptions io;
    io.kdf = repo::KdfParams{.scrypt = {1024, 8, 1}};
    repo::Repository::init(*be, repo::Secret(repo::Secret::Kind::passphrase, "correct horse"), io);
    config = parse_config(base_config(d), "agent.toml");
  }
  std::unique_ptr<TaskRunner> make_runner() {
    return std::make_unique<TaskRunner>([this](v1::AgentMessage m) { sent.push_back(std::move(m)); }, record);
  }
  std::unique_ptr<repo::Repository> open() {
    auto r = repo::Repository::open(repo::make_fs_backend(d.file("repo")), repo::Secret(repo::Secret::Kind::passphrase, "correct horse"));
    (void)r->load_index();
    return r;
  }
  v1::TaskResult backup(const std::string& parent) {
    v1::Task t;
    t.set_task_id("backup-" + std::to_string(++n));
    t.set_component("data");
    t.set_kind(v1::TASK_KIND_BACKUP);
    t.set_parent_snapshot_id(parent);
    Admission a = admit_task(config, "plan-1", t);
    REQUIRE(a.task);
    sent.clear();
    v1::TaskResult r = runner->run(*a.task);
    INFO((r.reasons_size() ? r.reasons(0).detail() : ""));
    REQUIRE(r.outcome() == v1::TASK_OUTCOME_SUCCEEDED);
    return r;
  }
  repo::Snapshot snapshot(const std::string& id) {
    auto r = open();
    return repo::load_snapshot(*r, id);
  }
  // What the runner told the operator besides progress numbers.
  std::string notes() const {
    std::string out;
    for (const auto& m : sent)
      if (m.has_progress() && m.progress().current_item().rfind("note: ", 0) == 0) out += m.progress().current_item() + "\n";
    return out;
  }
  // A snapshot of the component's paths and tags that this agent did not write:
  // anyone with the repository password can save one.
  std::string foreign_snapshot() {
    auto r = open();
    repo::BackupOptions bo;
    bo.paths = {d.file("data")};
    bo.tags = {"cairn", "component:data", "task:forged"};
    return repo::backup(*r, bo).snapshot.id;
  }
};

}  // namespace

TEST_CASE("agent parent: the named parent is used when this agent wrote it, also after a restart") {
  ParentFixture f;
  v1::TaskResult first = f.backup("");
  CHECK(f.snapshot(first.snapshot_id()).parent.empty());
  CHECK(f.notes().empty());

  v1::TaskResult second = f.backup(first.snapshot_id());
  CHECK(f.snapshot(second.snapshot_id()).parent == first.snapshot_id());
  CHECK(f.notes().empty());

  f.runner = f.make_runner();  // the record is read back from the state directory
  v1::TaskResult third = f.backup(second.snapshot_id());
  CHECK(f.snapshot(third.snapshot_id()).parent == second.snapshot_id());
}

TEST_CASE("agent parent: no named parent means none, never the repository's newest of these paths") {
  ParentFixture f;
  f.backup("");
  f.foreign_snapshot();
  v1::TaskResult r = f.backup("");
  CHECK(f.snapshot(r.snapshot_id()).parent.empty());
}

TEST_CASE("agent parent: a named parent this agent did not write is not used, with a note, not a failure") {
  ParentFixture f;
  f.backup("");
  std::string forged = f.foreign_snapshot();
  v1::TaskResult r = f.backup(forged);  // succeeded: checked inside
  CHECK(f.snapshot(r.snapshot_id()).parent.empty());
  CHECK(f.notes().find("is not a snapshot this agent wrote") != std::string::npos);
  CHECK(r.files() == 2);
}

TEST_CASE("agent parent: an unreadable record is set aside and the next backup reads every file") {
  ParentFixture f;
  v1::TaskResult first = f.backup("");
  write_text(f.record, "{not json");
  f.runner = f.make_runner();
  v1::TaskResult second = f.backup(first.snapshot_id());
  CHECK(f.snapshot(second.snapshot_id()).parent.empty());
  CHECK(std::filesystem::exists(f.record + ".unusable"));
  // The record starts again with what this agent writes from now on.
  v1::TaskResult third = f.backup(second.snapshot_id());
  CHECK(f.snapshot(third.snapshot_id()).parent == second.snapshot_id());
}

TEST_CASE("own snapshots: the record keeps the newest ids per repository and component") {
  TempDir d;
  OwnSnapshots own(d.file("own.json"));
  for (size_t i = 0; i < OwnSnapshots::kKeepPerSource + 3; ++i) REQUIRE(own.add("/repo", "data", "id" + std::to_string(i)).empty());
  OwnSnapshots again(d.file("own.json"));
  CHECK_FALSE(again.contains("/repo", "data", "id0"));
  CHECK(again.contains("/repo", "data", "id" + std::to_string(OwnSnapshots::kKeepPerSource + 2)));
  CHECK_FALSE(again.contains("/repo", "etc", "id5"));
  CHECK_FALSE(again.contains("/other", "data", "id5"));
}
