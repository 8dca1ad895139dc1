// A repository's signed set records against its snapshots (controller/record_check.h):
// what `cairnctl repo check` names missing, which repository "this" one is,
// records that do not verify.
#include "controller/record_check.h"

#include <catch2/catch.hpp>

#include "controller/set_record.h"

using namespace cairn;
using namespace cairn::controller;

// Helpers and tests in a namespace of their own: the unity build batches test files together.
namespace record_check_test {

std::string sid(char c) { return std::string(64, c); }

SetRecord::Task task(const std::string& id, const std::string& repository, const std::string& snapshot) {
  SetRecord::Task t;
  t.id = id;
  t.agent_name = "node-" + id;
  t.component = "etcd";
  t.repository = repository;
  t.snapshot_id = snapshot;
  t.state = snapshot.empty() ? "failed" : "succeeded";
  return t;
}

SetRecord record(const std::string& set, std::vector<SetRecord::Task> tasks, int64_t signed_at = 100) {
  SetRecord r;
  r.set_id = set;
  r.created_at = 1'790'000'000;
  r.signed_at = signed_at;
  r.state = "complete";
  r.tasks = std::move(tasks);
  return r;
}

struct Keys {
  plan::SigningKey key = plan::SigningKey::generate();
  plan::SigningKey other = plan::SigningKey::generate();
  plan::PublicKey pub = key.public_key();
  TrustedKeyLookup lookup = [this](const std::string& id) -> const plan::PublicKey* { return id == key.key_id() ? &pub : nullptr; };
  StoredRecord stored(const SetRecord& r, const std::string& name, bool by_other = false) {
    return {name, sign_set_record(r, by_other ? other : key)};
  }
};

std::vector<std::string> ids(const std::vector<RecordedSnapshot>& v) {
  std::vector<std::string> out;
  for (const auto& s : v) out.push_back(s.snapshot_id);
  return out;
}

TEST_CASE("a snapshot a verified record lists here that is not here is missing, named with its set and task") {
  Keys k;
  std::vector<StoredRecord> recs = {k.stored(record("bs-1", {task("t1", "main", sid('a')), task("t2", "main", sid('b'))}), "r1"),
                                    k.stored(record("bs-2", {task("t3", "main", sid('c')), task("t4", "main", "")}), "r2")};
  auto rc = check_set_records(recs, {sid('a'), sid('c')}, "", &k.lookup);
  CHECK(rc.verified);
  CHECK(rc.records == 2);
  CHECK(rc.sets == 2);
  CHECK(rc.names == std::set<std::string>{"main"});
  CHECK(ids(rc.recorded) == std::vector<std::string>{sid('a'), sid('b'), sid('c')});  // a task without a snapshot lists none
  REQUIRE(rc.missing.size() == 1);
  CHECK(rc.missing[0].snapshot_id == sid('b'));
  CHECK(rc.missing[0].set_id == "bs-1");
  CHECK(rc.missing[0].task_id == "t2");
  CHECK(rc.missing[0].agent == "node-t2");
  CHECK(rc.missing[0].component == "etcd");
  CHECK(rc.missing[0].made_at == 1'790'000'000);
  CHECK(rc.problems.empty());
}

TEST_CASE("every snapshot deleted: the one repository the records name is this one, and all are missing") {
  Keys k;
  std::vector<StoredRecord> recs = {k.stored(record("bs-1", {task("t1", "main", sid('a'))}), "r1"),
                                    k.stored(record("bs-2", {task("t2", "main", sid('b'))}), "r2")};
  auto rc = check_set_records(recs, {}, "", &k.lookup);
  CHECK(rc.unknown_name.empty());
  CHECK(ids(rc.missing) == std::vector<std::string>{sid('a'), sid('b')});
}

TEST_CASE("snapshots a record places in another repository are not looked for here") {
  Keys k;
  // bs-1's tasks went to two repositories, and its snapshot in main was
  // copied offsite (another id there); this is main: its own snapshot is here.
  auto t1 = task("t1", "main", sid('a'));
  t1.copies = {{"offsite", sid('x')}};
  std::vector<StoredRecord> recs = {k.stored(record("bs-1", {t1, task("t2", "other", sid('b'))}), "r1")};
  auto rc = check_set_records(recs, {sid('a')}, "", &k.lookup);
  CHECK(rc.names == std::set<std::string>{"main"});
  CHECK(ids(rc.recorded) == std::vector<std::string>{sid('a')});
  CHECK(rc.missing.empty());
  // The same record in the offsite repository, where only the copy is (and is gone).
  auto off = check_set_records(recs, {}, "offsite", &k.lookup);
  CHECK(ids(off.missing) == std::vector<std::string>{sid('x')});
  CHECK(off.missing[0].copy);
  CHECK(off.missing[0].repository == "offsite");
}

TEST_CASE("nothing listed is here and the records name several repositories: it cannot tell, and says so") {
  Keys k;
  auto t1 = task("t1", "main", sid('a'));
  t1.copies = {{"offsite", sid('x')}};
  std::vector<StoredRecord> recs = {k.stored(record("bs-1", {t1}), "r1")};
  auto rc = check_set_records(recs, {}, "", &k.lookup);
  CHECK(rc.missing.empty());
  CHECK(rc.unknown_name.find("'main', 'offsite'") != std::string::npos);
  CHECK(rc.unknown_name.find("--repository-name") != std::string::npos);
  // Another set stored only in main settles it: main is the name every record gives.
  recs.push_back(k.stored(record("bs-2", {task("t2", "main", sid('b'))}), "r2"));
  rc = check_set_records(recs, {}, "", &k.lookup);
  CHECK(rc.unknown_name.empty());
  CHECK(ids(rc.missing) == std::vector<std::string>{sid('a'), sid('b')});
}

TEST_CASE("the newest record of a set is the one read: a copy recorded later is looked for") {
  Keys k;
  auto t1 = task("t1", "main", sid('a'));
  auto old = record("bs-1", {t1}, 100);
  t1.copies = {{"offsite", sid('x')}};
  auto newer = record("bs-1", {t1}, 200);
  std::vector<StoredRecord> recs = {k.stored(newer, "r2"), k.stored(old, "r1")};
  auto rc = check_set_records(recs, {sid('a')}, "offsite", &k.lookup);
  CHECK(rc.sets == 1);
  CHECK(ids(rc.missing) == std::vector<std::string>{sid('x')});
}

TEST_CASE("a forged record is named as not verifying, and what it lists is not looked for") {
  Keys k;
  std::vector<StoredRecord> recs = {k.stored(record("bs-1", {task("t1", "main", sid('a'))}), "r1"),
                                    k.stored(record("bs-9", {task("t9", "main", sid('f'))}), "forged", true)};
  // A signature made over another body.
  auto tampered = sign_set_record(record("bs-2", {task("t2", "main", sid('b'))}), k.key);
  tampered["body"] = set_record_body(record("bs-2", {task("t2", "main", sid('e'))}));
  recs.push_back({"tampered", tampered});
  recs.push_back({"unreadable", std::nullopt, "authentication failed"});
  auto rc = check_set_records(recs, {sid('a')}, "", &k.lookup);
  CHECK(rc.missing.empty());
  CHECK(ids(rc.recorded) == std::vector<std::string>{sid('a')});
  REQUIRE(rc.problems.size() == 3);
  std::map<std::string, RecordProblem> by;
  for (const auto& p : rc.problems) by[p.record] = p;
  CHECK(by["forged"].set_id == "bs-9");
  CHECK(by["forged"].error);
  CHECK(by["forged"].why.find("not a controller key trusted here") != std::string::npos);
  CHECK(by["tampered"].set_id == "bs-2");
  CHECK(by["tampered"].why.find("signature does not verify") != std::string::npos);
  CHECK(by["unreadable"].why.find("authentication failed") != std::string::npos);
  CHECK(by["forged"].untrusted);
  CHECK(by["tampered"].untrusted);
  CHECK_FALSE(by["unreadable"].untrusted);
  // Without keys the forged ones are read like the rest (unverified), and their snapshots looked for.
  auto un = check_set_records(recs, {sid('a')}, "", nullptr);
  CHECK_FALSE(un.verified);
  CHECK(ids(un.missing) == std::vector<std::string>{sid('e'), sid('f')});
  CHECK(un.problems.size() == 1);  // the unreadable one
}

TEST_CASE("a record of another key beside one that verifies (a rotation) is named, not an error") {
  Keys k;
  auto r = record("bs-1", {task("t1", "main", sid('a'))});
  std::vector<StoredRecord> recs = {k.stored(r, "old", true), k.stored(r, "new")};
  auto rc = check_set_records(recs, {sid('a')}, "", &k.lookup);
  REQUIRE(rc.problems.size() == 1);
  CHECK(rc.problems[0].record == "old");
  CHECK_FALSE(rc.problems[0].error);
  CHECK(rc.missing.empty());
}

TEST_CASE("no record: nothing is recorded and nothing is missing") {
  auto rc = check_set_records({}, {sid('a')}, "", nullptr);
  CHECK(rc.records == 0);
  CHECK(rc.recorded.empty());
  CHECK(rc.missing.empty());
  CHECK(rc.unknown_name.empty());
}

}  // namespace record_check_test
