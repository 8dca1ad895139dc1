// A restore's preflight reads the whole snapshot back before anything is
// stopped or written (agent/restore_verify.h, docs/protocol.md § The cluster
// restore): what the runner calls, against a real repository holding a files
// backup. (The runner's steps run only for cluster and member components:
// tests/integration/test_restore_prestop.py restores real etcd and Kafka.)
#include "agent/restore_verify.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "agent/config.h"
#include "agent/task_admission.h"
#include "agent/task_runner.h"
#include "agent_fixture.h"
#include "common/repo/repository.h"
#include "common/repo/snapshot.h"
#include "common/repo/storage/backend.h"
#include "common/util/encoding.h"
#include "common/util/fs.h"

using namespace cairn;
using namespace cairn::agent;
using namespace cairn::agent::test;
namespace v1 = cairn::v1;

namespace {

struct ReadBackFixture {
  TempDir d;
  AgentConfig config;
  std::vector<v1::AgentMessage> sent;
  TaskRunner runner{[this](v1::AgentMessage m) { sent.push_back(std::move(m)); }};
  std::string snapshot;

  ReadBackFixture() {
    write_text(d.file("data/a.conf"), "alpha\n");
    write_text(d.file("data/sub/b.bin"), std::string(300000, 'b'));
    auto be = repo::make_fs_backend(d.file("repo"));
    repo::InitOptions io;
    io.kdf = repo::KdfParams{.scrypt = {1024, 8, 1}};
    repo::Repository::init(*be, repo::Secret(repo::Secret::Kind::passphrase, "correct horse"), io);
    config = parse_config(base_config(d), "agent.toml");
    v1::Task t;
    t.set_task_id("backup-1");
    t.set_component("data");
    t.set_kind(v1::TASK_KIND_BACKUP);
    t.set_backup_set_id("set-1");
    v1::TaskResult b = run(t);
    REQUIRE(b.outcome() == v1::TASK_OUTCOME_SUCCEEDED);
    snapshot = b.snapshot_id();
  }
  std::unique_ptr<repo::Repository> open() const {
    auto r = repo::Repository::open(repo::make_fs_backend(d.file("repo")), repo::Secret(repo::Secret::Kind::passphrase, "correct horse"));
    (void)r->load_index();
    return r;
  }
  v1::TaskResult run(const v1::Task& t) {
    Admission a = admit_task(config, "plan-" + t.task_id(), t);
    REQUIRE(a.task);
    return runner.run(*a.task);
  }
  // What the runner's preflight step does first.
  std::vector<v1::Reason> read_back(repo::VerifyResult* stats = nullptr) {
    auto r = open();
    TaskContext ctx;
    ctx.task_id = "restore-1";
    ctx.component = "data";
    ctx.repo = r.get();
    ctx.progress = [this](const WorkProgress& w) { phases.push_back(w.phase); };
    return verify_restore_snapshot(ctx, snapshot, stats);
  }
  std::vector<v1::Phase> phases;
};

}  // namespace

TEST_CASE("restore read back: a whole snapshot reads back, and what was read goes into the step's metadata", "[restore][read_back]") {
  ReadBackFixture f;
  repo::VerifyResult stats;
  auto reasons = f.read_back(&stats);
  INFO((reasons.empty() ? "" : reasons[0].detail()));
  REQUIRE(reasons.empty());
  auto meta = read_back_json(stats);
  CHECK(meta["bytes"] == 6 + 300000);
  CHECK(meta["blobs"].get<uint64_t>() >= 2);
  CHECK(meta["trees"].get<uint64_t>() >= 2);
  REQUIRE_FALSE(f.phases.empty());
  CHECK(std::all_of(f.phases.begin(), f.phases.end(), [](v1::Phase p) { return p == v1::PHASE_VERIFY; }));
}

TEST_CASE("restore read back: a damaged pack is refused, naming pack, file, repository and what to do", "[restore][read_back]") {
  ReadBackFixture f;
  std::string pack_object;
  {
    auto r = f.open();
    auto loc = r->index().lookup(r->blob_id(as_bytes(std::string("alpha\n"))));
    REQUIRE(loc);
    std::string pack = repo::id_hex(loc->pack);
    pack_object = "data/" + pack.substr(0, 2) + "/" + pack;
    Fd fd(::open(f.d.file("repo/" + pack_object).c_str(), O_RDWR));
    REQUIRE(fd);
    uint8_t c = 0;
    REQUIRE(::pread(fd.get(), &c, 1, loc->offset + loc->length / 2) == 1);
    c ^= 0x40;
    REQUIRE(::pwrite(fd.get(), &c, 1, loc->offset + loc->length / 2) == 1);
  }

  auto reasons = f.read_back();
  REQUIRE(reasons.size() == 1);
  const auto& why = reasons[0];
  INFO(why.detail());
  CHECK(why.code() == v1::ERROR_CODE_REPOSITORY_CORRUPT);
  CHECK(why.item() == f.d.file("data/a.conf"));
  CHECK_THAT(why.detail(), Catch::Contains("snapshot '" + f.snapshot.substr(0, 8) + "' cannot be read back whole") &&
                               Catch::Contains("'" + f.d.file("data/a.conf") + "'") && Catch::Contains(pack_object) &&
                               Catch::Contains("repository '" + f.d.file("repo") + "'") &&
                               Catch::Contains("before anything was stopped or changed") &&
                               Catch::Contains("cairnctl repo check --read-data") && Catch::Contains("another backup set"));
}

TEST_CASE("restore read back: a snapshot that is not there is named with the repository", "[restore][read_back]") {
  ReadBackFixture f;
  f.snapshot = std::string(64, 'a');
  auto reasons = f.read_back();
  REQUIRE(reasons.size() == 1);
  CHECK(reasons[0].code() == v1::ERROR_CODE_SNAPSHOT_NOT_FOUND);
  CHECK_THAT(reasons[0].detail(), Catch::Contains("could not be read back from repository '" + f.d.file("repo") + "'") &&
                                      Catch::Contains("nothing was stopped or changed"));
}
