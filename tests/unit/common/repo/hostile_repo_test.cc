// A hostile or damaged repository must not exhaust the reader, and damage must read
// as damage: declared sizes are checked against the format's ceilings before they
// allocate (decompression bombs), every byte of key slots and config is
// authenticated, 'latest' never stands in an older snapshot for a damaged one, and
// read-only commands work on a repository that cannot be written.
#include <sys/resource.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <filesystem>

#include "common/repo/index.h"
#include "common/repo/limits.h"
#include "common/repo/lock.h"
#include "common/repo/pack.h"
#include "common/repo/repository.h"
#include "common/repo/snapshot.h"
#include "common/util/error.h"
#include "repo_test_util.h"

using namespace cairn;
using namespace cairn::repo;
using cairn::repo::test::TempDir;
namespace fs = std::filesystem;

namespace {

const Secret kPw(Secret::Kind::passphrase, "correct horse");

struct Repo {
  TempDir tmp;
  std::string root = tmp.path + "/repo";
  std::unique_ptr<Repository> r;
  Repo() {
    InitOptions io;
    io.kdf = KdfParams{.scrypt = {1024, 8, 1}};
    auto be = make_fs_backend(root);
    Repository::init(*be, kPw, io);
    r = open();
  }
  std::unique_ptr<Repository> open(const Secret& s = kPw) { return Repository::open(make_fs_backend(root), s); }
};

// A 13-byte zstd frame that declares `declared` bytes (1 GiB) of content but holds
// one RLE block of 16 bytes.
Bytes bomb_frame(uint32_t declared = 1u << 30) {
  Bytes f = {0x28, 0xB5, 0x2F, 0xFD,  // magic
             0xA0,                    // 4-byte content size, single segment
             0,    0,    0,    0,     // content size
             0x83, 0x00, 0x00,        // last block, RLE, 16 bytes
             'x'};
  put_u32le(f.data() + 5, declared);
  return f;
}

long max_rss_kib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

// Stores an encrypted JSON file whose plaintext header declares raw_len and whose
// body is the given zstd frame (§ 9), as a writer holding the key could.
std::string save_crafted(Repository& r, FileType t, uint32_t raw_len, const Bytes& frame) {
  Bytes plain(5);
  plain[0] = 1;  // zstd
  put_u32le(plain.data() + 1, raw_len);
  plain.insert(plain.end(), frame.begin(), frame.end());
  std::string aad = std::string("cairn-") + file_type_name(t) + "-v1";
  Bytes sealed = r.aead().seal(as_bytes(aad), plain);
  std::string name = to_hex(crypto::sha256(sealed));
  r.backend().save({t, name}, sealed);
  return name;
}

std::string message_of(const std::function<void()>& f, Errc want) {
  try {
    f();
  } catch (const Error& e) {
    INFO(e.what());
    REQUIRE(e.code() == want);
    return e.what();
  }
  FAIL("no error thrown");
  return {};
}

std::string key_slot_path(const std::string& root) {
  for (const auto& e : fs::directory_iterator(root + "/keys"))
    if (e.path().filename().string()[0] != '.') return e.path().string();
  FAIL("no key slot");
  return {};
}

}  // namespace

TEST_CASE("bounds: a snapshot whose tiny frame declares 1 GiB is refused without allocating it") {
  Repo t;
  long before = max_rss_kib();
  std::string name = save_crafted(*t.r, FileType::snapshot, 1u << 30, bomb_frame());
  std::vector<std::pair<std::string, std::string>> bad;
  auto snaps = load_snapshots(*t.r, &bad);
  REQUIRE(snaps.empty());
  REQUIRE(bad.size() == 1);
  INFO(bad[0].second);
  REQUIRE(bad[0].first == name);
  // names the object and the ceiling of its kind
  REQUIRE(bad[0].second.find("snapshots/" + name) != std::string::npos);
  REQUIRE(bad[0].second.find(std::to_string(kMaxSnapshotText)) != std::string::npos);
  REQUIRE(max_rss_kib() - before < 64 * 1024);
}

TEST_CASE("bounds: an index file whose frame declares more than its blocks hold is refused without allocating it") {
  Repo t;
  long before = max_rss_kib();
  // Below the index ceiling, so only the frame's own blocks can tell.
  std::string name = save_crafted(*t.r, FileType::index, 200u << 20, bomb_frame(200u << 20));
  auto problems = t.r->load_index();
  REQUIRE(problems.size() == 1);
  INFO(problems[0].message);
  REQUIRE(problems[0].index_file == name);
  REQUIRE(problems[0].message.find("declares 209715200 bytes") != std::string::npos);
  REQUIRE(problems[0].message.find("at most 16") != std::string::npos);
  REQUIRE(max_rss_kib() - before < 64 * 1024);
}

TEST_CASE("bounds: a tree blob whose frame declares 1 GiB is refused without allocating it") {
  Repo t;
  long before = max_rss_kib();
  BlobId id = crypto::random_array<32>();
  Bytes sealed = t.r->aead().seal(blob_aad(BlobType::tree, id), bomb_frame());
  PackBuilder pb;
  pb.add(id, BlobType::tree, kBlobCompressed, 1u << 30, sealed);
  std::vector<PackBlob> blobs;
  Bytes pack = pb.finish(t.r->aead(), blobs);
  BlobId pid = pack_id(pack);
  t.r->backend().save({FileType::pack, id_hex(pid)}, pack);
  t.r->index().add_pack(pid, blobs);
  std::string msg = message_of([&] { t.r->load_blob(id); }, Errc::corrupt);
  REQUIRE(msg.find(id_hex(id)) != std::string::npos);
  REQUIRE(msg.find("can hold at most 16") != std::string::npos);
  REQUIRE(max_rss_kib() - before < 64 * 1024);
}

TEST_CASE("bounds: a data blob may not declare more than the largest chunk") {
  Repo t;
  BlobId id = crypto::random_array<32>();
  Bytes sealed = t.r->aead().seal(blob_aad(BlobType::data, id), bomb_frame());
  PackBuilder pb;
  pb.add(id, BlobType::data, kBlobCompressed, kMaxChunkSize + 1, sealed);
  std::vector<PackBlob> blobs;
  Bytes pack = pb.finish(t.r->aead(), blobs);
  // The pack header and an index file saying so are both refused.
  std::string msg = message_of([&] { parse_pack_header(pack, t.r->aead(), "p"); }, Errc::corrupt);
  REQUIRE(msg.find("limits") != std::string::npos);
  IndexFile f;
  f.packs.emplace_back(pack_id(pack), blobs);
  std::string text = encode_index_file(f).dump();
  message_of([&] { decode_index_file_bytes(as_bytes(text), "i"); }, Errc::corrupt);
}

TEST_CASE("bounds: an index entry's sealed length is bounded before any read is sized by it") {
  IndexFile f;
  PackBlob b;
  b.id = crypto::random_array<32>();
  b.type = BlobType::data;
  b.length = UINT32_MAX;
  b.raw_length = 100;
  f.packs.emplace_back(crypto::random_array<32>(), std::vector<PackBlob>{b});
  std::string text = encode_index_file(f).dump();
  message_of([&] { decode_index_file_bytes(as_bytes(text), "i"); }, Errc::corrupt);
}

TEST_CASE("bounds: files above their kind's ceiling are refused before they are read") {
  Repo t;
  // A huge snapshot file (sparse: no disk used) is refused by its size alone.
  std::string big = t.root + "/snapshots/" + std::string(64, 'b');
  { std::ofstream o(big); }
  fs::resize_file(big, uint64_t(kMaxSnapshotText) + 4096);
  long before = max_rss_kib();
  std::vector<std::pair<std::string, std::string>> bad;
  load_snapshots(*t.r, &bad);
  REQUIRE(bad.size() == 1);
  REQUIRE(bad[0].second.find("above the limit") != std::string::npos);
  REQUIRE(max_rss_kib() - before < 32 * 1024);
  // A key slot or config beyond 64 KiB: damage, not an allocation.
  fs::resize_file(key_slot_path(t.root), kMaxKeySlotFile + 1);
  message_of([&] { t.open(); }, Errc::corrupt);
  fs::resize_file(t.root + "/config", kMaxConfigFile + 1);
  message_of([&] { t.open(); }, Errc::corrupt);
}

TEST_CASE("bounds: writers never produce what a reader would refuse") {
  Repo t;
  nlohmann::json j = {{"pad", std::string(kMaxLockText + 1, 'x')}};
  message_of([&] { t.r->save_json(FileType::lock, j); }, Errc::invalid_input);
  // A snapshot listing more errors than the format keeps records their number.
  Snapshot s;
  s.time = "2026-01-01T00:00:00Z";
  s.paths = {"/x"};
  for (size_t i = 0; i < kMaxSnapshotErrors + 5; ++i) s.errors.push_back({"/x/" + std::to_string(i), "cannot open"});
  save_snapshot(*t.r, s);
  Snapshot back = load_snapshot(*t.r, s.id);
  REQUIRE(back.errors.size() == kMaxSnapshotErrors);
  REQUIRE(back.summary.at("errors_not_listed") == 5);
}

TEST_CASE("keys: flipping any byte of a key slot reads as damage, a wrong passphrase as a wrong passphrase") {
  Repo t;
  std::string path = key_slot_path(t.root);
  const std::string orig = test::slurp(path);
  message_of([&] { t.open(Secret(Secret::Kind::passphrase, "wrong")); }, Errc::wrong_key);
  for (uint8_t mask : {0x01, 0x20, 0xff}) {
    for (size_t i = 0; i < orig.size(); ++i) {
      std::string s = orig;
      s[i] = char(s[i] ^ mask);
      test::write(path, s, 0600);
      INFO("byte " << i << " ^ " << int(mask));
      std::string msg = message_of([&] { t.open(); }, Errc::corrupt);
      REQUIRE(msg.find(fs::path(path).filename().string()) != std::string::npos);
    }
  }
  test::write(path, orig, 0600);
  REQUIRE(t.open() != nullptr);
}

TEST_CASE("keys: a slot whose metadata was rewritten and renamed to match is damaged, not opened") {
  Repo t;
  std::string path = key_slot_path(t.root);
  const std::string orig = test::slurp(path);
  auto edited = [&](const char* field, const nlohmann::json& value) {
    nlohmann::json j = nlohmann::json::parse(orig);
    j[field] = value;
    std::string text = j.dump(2) + "\n";
    fs::remove(path);
    std::string renamed = t.root + "/keys/" + to_hex(crypto::sha256(as_bytes(text)));
    test::write(renamed, text, 0600);
    INFO(field);
    std::string msg = message_of([&] { t.open(); }, Errc::corrupt);
    REQUIRE(msg.find("fields were changed") != std::string::npos);
    fs::remove(renamed);
  };
  edited("created", "2001-01-01T00:00:00.000000000Z");
  edited("hostname", "elsewhere");
  edited("username", "mallory");
  test::write(path, orig, 0600);
  REQUIRE(t.open() != nullptr);
}

TEST_CASE("config: flipping any byte reads as damage") {
  Repo t;
  std::string path = t.root + "/config";
  const std::string orig = test::slurp(path);
  for (uint8_t mask : {0x01, 0x20, 0xff}) {
    for (size_t i = 0; i < orig.size(); ++i) {
      std::string s = orig;
      s[i] = char(s[i] ^ mask);
      test::write(path, s, 0600);
      INFO("byte " << i << " ^ " << int(mask) << ": " << s);
      std::string msg = message_of([&] { t.open(); }, Errc::corrupt);
      REQUIRE(msg.find("config") != std::string::npos);
    }
  }
  // Rewritten with a fresh checksum: the seal still tells (created is authenticated).
  nlohmann::json j = nlohmann::json::parse(orig);
  j["created"] = "2001-01-01T00:00:00Z";
  j.erase("checksum");
  j["checksum"] = to_hex(crypto::sha256(as_bytes(j.dump())));
  test::write(path, j.dump(2) + "\n", 0600);
  REQUIRE(message_of([&] { t.open(); }, Errc::corrupt).find("fails authentication") != std::string::npos);
  test::write(path, orig, 0600);
  REQUIRE(t.open() != nullptr);
}

TEST_CASE("snapshots: 'latest' refuses while a snapshot is damaged, and --skip-damaged names what it skipped") {
  Repo t;
  Snapshot a, b;
  a.time = "2026-01-01T00:00:00Z";
  b.time = "2026-01-02T00:00:00Z";
  a.paths = b.paths = {"/x"};
  save_snapshot(*t.r, a);
  save_snapshot(*t.r, b);
  REQUIRE(resolve_snapshot(*t.r, "latest") == b.id);
  std::string p = t.root + "/snapshots/" + b.id;
  std::string s = test::slurp(p);
  s[s.size() / 2] ^= 1;
  test::write(p, s, 0600);
  std::string msg = message_of([&] { resolve_snapshot(*t.r, "latest"); }, Errc::corrupt);
  REQUIRE(msg.find(b.id.substr(0, 8)) != std::string::npos);
  REQUIRE(msg.find("--skip-damaged") != std::string::npos);
  std::vector<std::pair<std::string, std::string>> skipped;
  REQUIRE(resolve_snapshot(*t.r, "latest", true, &skipped) == a.id);
  REQUIRE(skipped.size() == 1);
  REQUIRE(skipped[0].first == b.id);
}

namespace {
// A backend whose every save fails as on a read-only filesystem (or with err).
class ReadOnlyBackend final : public Backend {
 public:
  ReadOnlyBackend(std::unique_ptr<Backend> inner, int err) : in_(std::move(inner)), err_(err) {}
  std::string location() const override { return in_->location(); }
  BackendCaps caps() const override { return in_->caps(); }
  void create() override { in_->create(); }
  void save(const Handle& h, std::span<const uint8_t>) override {
    throw_errno("cannot create", location() + "/" + file_type_name(h.type) + "/.tmp", err_);
  }
  Bytes load(const Handle& h, uint64_t o, uint64_t l) override { return in_->load(h, o, l); }
  std::optional<uint64_t> size(const Handle& h) override { return in_->size(h); }
  void remove(const Handle& h) override { throw_errno("cannot remove", location() + "/" + h.name, err_); }
  void list(FileType t, const std::function<void(const std::string&, uint64_t)>& fn) override { in_->list(t, fn); }

 private:
  std::unique_ptr<Backend> in_;
  int err_;
};
}  // namespace

TEST_CASE("locks: a read-only repository is read without a lock, with a warning; a held exclusive lock still refuses") {
  Repo t;
  for (int err : {EROFS, EACCES, ENOSPC, EDQUOT}) {
    auto ro = Repository::open(std::make_unique<ReadOnlyBackend>(make_fs_backend(t.root), err), kPw);
    std::vector<std::string> warnings;
    auto lock = lock_for_reading(*ro, "restore", std::chrono::seconds(0), [&](const std::string& m) { warnings.push_back(m); });
    REQUIRE(lock == nullptr);
    REQUIRE(warnings.size() == 1);
    REQUIRE(warnings[0].find("no lock was taken") != std::string::npos);
  }
  // Another failure is not taken for a read-only repository.
  auto broken = Repository::open(std::make_unique<ReadOnlyBackend>(make_fs_backend(t.root), EIO), kPw);
  message_of([&] { lock_for_reading(*broken, "restore"); }, Errc::io);
  // An exclusive lock held elsewhere refuses, read-only or not.
  auto holder = Lock::acquire(*t.r, LockKind::exclusive, "prune");
  auto ro = Repository::open(std::make_unique<ReadOnlyBackend>(make_fs_backend(t.root), EROFS), kPw);
  message_of([&] { lock_for_reading(*ro, "restore"); }, Errc::locked);
  // A writable repository gets a real lock.
  holder.reset();
  REQUIRE(lock_for_reading(*t.r, "restore") != nullptr);
}
