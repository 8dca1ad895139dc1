#include "common/repo/prune.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "common/repo/archiver.h"
#include "common/repo/checker.h"
#include "common/repo/snapshot.h"
#include "common/repo/tree.h"
#include "common/util/error.h"

using namespace cairn;
using namespace cairn::repo;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "cairn-prune-XXXXXX").string();
    REQUIRE(mkdtemp(t.data()));
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

Bytes random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes b(n);
  for (auto& x : b) x = uint8_t(rng());
  return b;
}

void write_file(const fs::path& p, const Bytes& b) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

struct TestRepo {
  TempDir dir;
  std::string root;
  std::unique_ptr<Repository> repo;
  explicit TestRepo(uint32_t pack_size = 16u << 20) {
    root = (dir.path / "repo").string();
    InitOptions io;
    io.kdf = KdfParams{.scrypt = {1024, 8, 1}};
    io.pack_size = pack_size;
    auto be = make_fs_backend(root);
    Repository::init(*be, secret(), io);
    repo = open();
  }
  static Secret secret() { return Secret(Secret::Kind::passphrase, "correct horse"); }
  std::unique_ptr<Repository> open() {
    auto r = Repository::open(make_fs_backend(root), secret());
    REQUIRE(r->load_index().empty());
    return r;
  }
  Snapshot backup(const std::vector<fs::path>& paths) {
    BackupOptions o;
    for (const auto& p : paths) o.paths.push_back(p.string());
    o.threads = 2;
    o.hostname = "testhost";
    return repo::backup(*repo, o).snapshot;
  }
  // Every file of the repository (relative path -> size), to see that nothing changed.
  std::map<std::string, uintmax_t> listing() const {
    std::map<std::string, uintmax_t> out;
    for (const auto& e : fs::recursive_directory_iterator(root))
      if (e.is_regular_file()) out[fs::relative(e.path(), root).string()] = e.file_size();
    return out;
  }
  size_t count(const std::string& sub) const {
    size_t n = 0;
    for (const auto& [p, s] : listing())
      if (p.rfind(sub, 0) == 0) ++n;
    return n;
  }
};

// Reads every file of a snapshot back through load_blob (which verifies every blob).
std::map<std::string, Bytes> read_snapshot(Repository& r, const Snapshot& s) {
  std::map<std::string, Bytes> out;
  std::vector<std::pair<std::string, BlobId>> todo = {{"", s.tree}};
  while (!todo.empty()) {
    auto [prefix, id] = todo.back();
    todo.pop_back();
    Tree t = decode_tree_bytes(r.load_blob(id));
    for (const auto& n : t.nodes) {
      std::string path = prefix + "/" + n.name;
      if (n.type == NodeType::dir && n.subtree) todo.emplace_back(path, *n.subtree);
      if (n.type != NodeType::file) continue;
      Bytes& b = out[path];
      for (const auto& c : n.content) {
        Bytes part = r.load_blob(c);
        b.insert(b.end(), part.begin(), part.end());
      }
    }
  }
  return out;
}

Bytes file_named(const std::map<std::string, Bytes>& files, const std::string& base) {
  for (const auto& [p, b] : files)
    if (p.size() >= base.size() && p.compare(p.size() - base.size(), base.size(), base) == 0) return b;
  FAIL("no file " << base << " in the snapshot");
  return {};
}

// How many index entries (over every index file) name this blob.
size_t index_copies(Repository& r, const BlobId& id) {
  size_t n = 0;
  for (const auto& name : r.list(FileType::index)) {
    IndexFile f = decode_index_file(r.load_json(FileType::index, name), name);
    for (const auto& [pid, blobs] : f.packs)
      for (const auto& b : blobs)
        if (b.id == id) ++n;
  }
  return n;
}

// The data blob ids a snapshot refers to.
std::vector<BlobId> content_ids(Repository& r, const Snapshot& s) {
  std::vector<BlobId> out;
  std::vector<BlobId> todo = {s.tree};
  while (!todo.empty()) {
    Tree t = decode_tree_bytes(r.load_blob(todo.back()));
    todo.pop_back();
    for (const auto& n : t.nodes) {
      if (n.subtree) todo.push_back(*n.subtree);
      out.insert(out.end(), n.content.begin(), n.content.end());
    }
  }
  return out;
}

}  // namespace

TEST_CASE("prune frees the packs of a forgotten snapshot; the other snapshot still reads back") {
  TestRepo t;
  Bytes a = random_bytes(300 * 1024, 1), b = random_bytes(400 * 1024, 2);
  write_file(t.dir.path / "src1" / "a.bin", a);
  write_file(t.dir.path / "src2" / "b.bin", b);
  Snapshot s1 = t.backup({t.dir.path / "src1"});
  Snapshot s2 = t.backup({t.dir.path / "src2"});
  size_t packs_before = t.count("data/");
  REQUIRE(packs_before >= 2);
  std::vector<BlobId> gone = content_ids(*t.repo, s2);
  REQUIRE_FALSE(gone.empty());

  // Nothing forgotten yet: nothing to do.
  PruneResult idle = prune(*t.repo, {});
  REQUIRE_FALSE(idle.changed);
  REQUIRE(idle.deleted.packs == 0);
  REQUIRE(t.count("data/") == packs_before);

  t.repo->backend().remove({FileType::snapshot, s2.id});
  PruneResult res = prune(*t.repo, {});
  REQUIRE(res.changed);
  REQUIRE(res.snapshots == 1);
  REQUIRE(res.deleted.packs >= 1);
  REQUIRE(res.bytes_freed >= b.size());
  REQUIRE(t.count("data/") < packs_before);
  REQUIRE(t.count("index/") == 1);

  auto r = t.open();
  auto files = read_snapshot(*r, load_snapshot(*r, s1.id));
  REQUIRE(file_named(files, "a.bin") == a);
  for (const auto& id : gone) REQUIRE_FALSE(r->index().contains(id));

  // A second prune finds nothing left to do.
  PruneResult again = prune(*r, {});
  REQUIRE_FALSE(again.changed);
  REQUIRE(again.unused_bytes_before == 0);
}

TEST_CASE("prune repacks a partly used pack only beyond the unused tolerance") {
  TestRepo t(1u << 20);
  Bytes a = random_bytes(200 * 1024, 3), b = random_bytes(200 * 1024, 4);
  write_file(t.dir.path / "src" / "a.bin", a);
  write_file(t.dir.path / "src" / "b.bin", b);
  Snapshot s1 = t.backup({t.dir.path / "src"});
  fs::remove(t.dir.path / "src" / "b.bin");
  Snapshot s2 = t.backup({t.dir.path / "src"});
  t.repo->backend().remove({FileType::snapshot, s1.id});

  SECTION("within the tolerance: kept as it is") {
    PruneOptions o;
    o.max_unused_percent = 100;
    PruneResult res = prune(*t.repo, o);
    REQUIRE(res.repacked.packs == 0);
    REQUIRE(res.unused_bytes_after >= b.size());
  }
  SECTION("beyond it: the used blobs move to a new pack, the old pack goes") {
    std::vector<Progress> events;
    PruneOptions o;
    o.progress = [&](const Progress& p) { events.push_back(p); };
    PruneResult res = prune(*t.repo, o);
    REQUIRE(res.repacked.packs >= 1);
    REQUIRE(res.written.packs >= 1);
    REQUIRE(res.unused_bytes_after == 0);
    REQUIRE(res.bytes_freed >= b.size());
    REQUIRE_FALSE(events.empty());
    REQUIRE(events.back().phase == "done");
    auto r = t.open();
    auto files = read_snapshot(*r, load_snapshot(*r, s2.id));
    REQUIRE(file_named(files, "a.bin") == a);
    REQUIRE(files.size() == 1);
    REQUIRE(prune(*r, {}).unused_bytes_before == 0);
  }
}

TEST_CASE("prune stopped while repacking takes back the packs it wrote: the repository is as it was") {
  TestRepo t(1u << 20);
  // 80 files of 100 KiB in one snapshot, so every pack holds files of both
  // halves; the second snapshot keeps only the even ones.
  std::map<std::string, Bytes> kept;
  for (int i = 0; i < 80; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "f%03d.bin", i);
    Bytes b = random_bytes(100 * 1024, 100 + i);
    write_file(t.dir.path / "src" / name, b);
    if (i % 2 == 0) kept[name] = b;
  }
  Snapshot s1 = t.backup({t.dir.path / "src"});
  for (int i = 1; i < 80; i += 2) {
    char name[32];
    std::snprintf(name, sizeof name, "f%03d.bin", i);
    fs::remove(t.dir.path / "src" / name);
  }
  Snapshot s2 = t.backup({t.dir.path / "src"});
  t.repo->backend().remove({FileType::snapshot, s1.id});
  auto before = t.listing();
  size_t packs_before = t.count("data/");

  // Stopped once a new pack is on disk: each stop, as often as it comes, leaves nothing behind.
  for (int round = 0; round < 3; ++round) {
    std::atomic<bool> cancel{false};
    size_t repacked = 0;
    PruneOptions o;
    o.cancel = &cancel;
    o.progress = [&](const Progress& p) {
      if (p.phase != "repack") return;
      repacked = p.files_done;
      if (t.count("data/") > packs_before) cancel = true;
    };
    auto r = t.open();
    try {
      prune(*r, o);
      FAIL("prune was not stopped");
    } catch (const Error& e) {
      REQUIRE(e.code() == Errc::interrupted);
      REQUIRE_THAT(e.what(), Catch::Contains("while repacking") && Catch::Contains("no pack or index was changed"));
    }
    INFO("stopped after repacking " << repacked << " pack(s)");
    REQUIRE(repacked >= 1);
    REQUIRE(t.listing() == before);
  }

  // The lock lost after the repack, before the index is written: the same.
  {
    PruneOptions o;
    o.check_lock = [] { throw Error(Errc::locked, "the lock is no longer valid"); };
    auto r = t.open();
    REQUIRE_THROWS_WITH(prune(*r, o), Catch::Contains("the lock is no longer valid") && Catch::Contains("no pack or index was changed"));
    REQUIRE(t.listing() == before);
  }

  // The next prune, left to finish, does the whole job.
  auto r = t.open();
  PruneResult res = prune(*r, {});
  REQUIRE(res.repacked.packs >= 4);
  REQUIRE(res.unindexed.packs == 0);
  CheckOptions co;
  co.read_data = true;
  REQUIRE(check(*r, co).clean());
  r->load_index();
  auto files = read_snapshot(*r, load_snapshot(*r, s2.id));
  REQUIRE(files.size() == kept.size());
  for (const auto& [name, b] : kept) REQUIRE(file_named(files, name) == b);
}

TEST_CASE("prune deletes packs that no index names (left by an interrupted backup)") {
  TestRepo t;
  Bytes a = random_bytes(100 * 1024, 5);
  write_file(t.dir.path / "src" / "a.bin", a);
  Snapshot s = t.backup({t.dir.path / "src"});
  // A pack written by a backup that died before its index was written.
  Bytes orphan = random_bytes(50 * 1024, 6);
  BlobId oid = t.repo->blob_id(orphan);
  PackBuilder pb;
  Bytes sealed = t.repo->aead().seal(blob_aad(BlobType::data, oid), orphan);
  pb.add(oid, BlobType::data, 0, uint32_t(orphan.size()), sealed);
  std::vector<PackBlob> blobs;
  Bytes pack = pb.finish(t.repo->aead(), blobs);
  std::string pid = to_hex(crypto::sha256(pack));
  t.repo->backend().save({FileType::pack, pid}, pack);
  REQUIRE(t.repo->backend().size({FileType::pack, pid}));
  auto index_before = t.count("index/");

  PruneResult res = prune(*t.repo, {});
  REQUIRE(res.unindexed.packs == 1);
  REQUIRE(res.unindexed.bytes == pack.size());
  REQUIRE_FALSE(t.repo->backend().size({FileType::pack, pid}));
  REQUIRE(t.count("index/") == index_before);  // no index rewrite needed for that
  auto r = t.open();
  REQUIRE(file_named(read_snapshot(*r, load_snapshot(*r, s.id)), "a.bin") == a);
}

TEST_CASE("prune --dry-run reports the same numbers and changes no file") {
  TestRepo t;
  Bytes a = random_bytes(150 * 1024, 7), b = random_bytes(150 * 1024, 8);
  write_file(t.dir.path / "src1" / "a.bin", a);
  write_file(t.dir.path / "src2" / "b.bin", b);
  t.backup({t.dir.path / "src1"});
  Snapshot s2 = t.backup({t.dir.path / "src2"});
  t.repo->backend().remove({FileType::snapshot, s2.id});
  auto before = t.listing();
  PruneOptions o;
  o.dry_run = true;
  PruneResult dry = prune(*t.repo, o);
  REQUIRE(t.listing() == before);
  REQUIRE_FALSE(dry.changed);
  REQUIRE(dry.deleted.packs >= 1);
  PruneResult real = prune(*t.repo, {});
  REQUIRE(real.deleted.packs == dry.deleted.packs);
  REQUIRE(real.deleted.bytes == dry.deleted.bytes);
  REQUIRE(real.bytes_freed == dry.bytes_freed);
  REQUIRE(t.listing() != before);
}

TEST_CASE("prune --dry-run can pretend snapshots are already forgotten") {
  TestRepo t;
  write_file(t.dir.path / "src1" / "a.bin", random_bytes(100 * 1024, 9));
  write_file(t.dir.path / "src2" / "b.bin", random_bytes(100 * 1024, 10));
  t.backup({t.dir.path / "src1"});
  Snapshot s2 = t.backup({t.dir.path / "src2"});
  auto before = t.listing();
  PruneOptions o;
  o.dry_run = true;
  REQUIRE(prune(*t.repo, o).deleted.packs == 0);
  o.ignore_snapshots = {s2.id};
  PruneResult res = prune(*t.repo, o);
  REQUIRE(res.snapshots == 1);
  REQUIRE(res.deleted.packs >= 1);
  REQUIRE(t.listing() == before);
}

TEST_CASE("prune reduces a blob stored by two concurrent writers to one copy") {
  TestRepo t;
  auto w1 = t.open(), w2 = t.open();
  Bytes data = random_bytes(80 * 1024, 11);
  BlobId id1, id2;
  REQUIRE(w1->save_blob(BlobType::data, data, id1));
  REQUIRE(w2->save_blob(BlobType::data, data, id2));  // w2 has not seen w1's copy
  REQUIRE(id1 == id2);
  w1->flush();
  w2->flush();
  // A snapshot that needs the blob.
  Tree tree;
  Node n;
  n.name = "f.bin";
  n.type = NodeType::file;
  n.mode = 0644;
  n.size = data.size();
  n.content = {id1};
  tree.nodes.push_back(n);
  std::string tb = encode_tree_bytes(tree);
  BlobId tid;
  w1->save_blob(BlobType::tree, as_bytes(tb), tid);
  w1->flush();
  Snapshot s;
  s.time = now_rfc3339();
  s.hostname = "testhost";
  s.paths = {"/f.bin"};
  s.tree = tid;
  save_snapshot(*w1, s);

  auto r = t.open();
  REQUIRE(index_copies(*r, id1) == 2);
  PruneResult res = prune(*r, {});
  REQUIRE(res.deleted.packs == 1);  // the pack holding only the second copy
  REQUIRE(res.deleted.blobs == 1);
  auto r2 = t.open();
  REQUIRE(index_copies(*r2, id1) == 1);
  REQUIRE(file_named(read_snapshot(*r2, load_snapshot(*r2, s.id)), "f.bin") == data);
}

TEST_CASE("prune refuses, changing nothing, when a snapshot's data cannot be read") {
  TestRepo t;
  write_file(t.dir.path / "src1" / "a.bin", random_bytes(100 * 1024, 12));
  write_file(t.dir.path / "src2" / "b.bin", random_bytes(100 * 1024, 13));
  t.backup({t.dir.path / "src1"});
  Snapshot s2 = t.backup({t.dir.path / "src2"});

  SECTION("an unreadable snapshot") {
    auto p = fs::path(t.root) / "snapshots" / s2.id;
    std::ofstream(p, std::ios::binary | std::ios::trunc) << "garbage";
  }
  SECTION("a missing tree pack") {
    auto loc = t.repo->index().lookup(s2.tree);
    REQUIRE(loc);
    t.repo->backend().remove({FileType::pack, id_hex(loc->pack)});
  }
  SECTION("a damaged index file") {
    auto names = t.repo->list(FileType::index);
    REQUIRE_FALSE(names.empty());
    auto p = fs::path(t.root) / "index" / names.front();
    fs::resize_file(p, fs::file_size(p) / 2);
  }
  auto before = t.listing();
  REQUIRE_THROWS_WITH(prune(*t.repo, {}), Catch::Contains("prune refused"));
  REQUIRE(t.listing() == before);
}

namespace {

// Forwards to a real backend and fails the n-th change (save or remove), as a
// crash would: nothing after it happens.
class CrashingBackend final : public Backend {
 public:
  CrashingBackend(std::unique_ptr<Backend> inner, int crash_at) : in_(std::move(inner)), crash_at_(crash_at) {}
  std::string location() const override { return in_->location(); }
  BackendCaps caps() const override { return in_->caps(); }
  void create() override { in_->create(); }
  void save(const Handle& h, std::span<const uint8_t> data) override {
    if (h.type != FileType::lock) step();
    in_->save(h, data);
  }
  Bytes load(const Handle& h, uint64_t offset, uint64_t length) override { return in_->load(h, offset, length); }
  std::optional<uint64_t> size(const Handle& h) override { return in_->size(h); }
  void remove(const Handle& h) override {
    if (h.type != FileType::lock) step();
    in_->remove(h);
  }
  void list(FileType t, const std::function<void(const std::string&, uint64_t)>& fn) override { in_->list(t, fn); }
  int changes = 0;

 private:
  void step() {
    // Once crashed, nothing more reaches the disk (no clean-up after a crash).
    if (changes++ >= crash_at_ && crash_at_ >= 0) throw Error(Errc::io, "simulated crash");
  }
  std::unique_ptr<Backend> in_;
  int crash_at_;
};

}  // namespace

TEST_CASE("prune interrupted at any step leaves a repository that checks clean and restores") {
  TestRepo t(1u << 20);
  Bytes a = random_bytes(200 * 1024, 21), b = random_bytes(200 * 1024, 22), c = random_bytes(150 * 1024, 23);
  write_file(t.dir.path / "src" / "a.bin", a);
  write_file(t.dir.path / "src" / "b.bin", b);
  write_file(t.dir.path / "other" / "c.bin", c);
  Snapshot s1 = t.backup({t.dir.path / "src"});
  Snapshot s2 = t.backup({t.dir.path / "other"});
  fs::remove(t.dir.path / "src" / "b.bin");
  Snapshot s3 = t.backup({t.dir.path / "src"});
  // Forget s1 (its pack becomes partly used: a repack) and s2 (fully unused packs).
  t.repo->backend().remove({FileType::snapshot, s1.id});
  t.repo->backend().remove({FileType::snapshot, s2.id});
  // And an orphan pack, as an interrupted backup leaves.
  {
    auto w = t.open();
    Bytes orphan = random_bytes(2u << 20, 24);  // larger than a pack: written without an index
    BlobId id;
    w->save_blob(BlobType::data, orphan, id);
  }
  t.repo.reset();
  const std::string pristine = (t.dir.path / "pristine").string();
  fs::copy(t.root, pristine, fs::copy_options::recursive);

  auto fresh_copy = [&](const std::string& name) {
    std::string dst = (t.dir.path / name).string();
    fs::remove_all(dst);
    fs::copy(pristine, dst, fs::copy_options::recursive);
    return dst;
  };
  auto run = [&](const std::string& root, int crash_at, int& changes) {
    auto be = std::make_unique<CrashingBackend>(make_fs_backend(root), crash_at);
    auto* raw = be.get();
    auto r = Repository::open(std::move(be), TestRepo::secret());
    try {
      PruneResult res = prune(*r, {});
      changes = raw->changes;
      return std::optional<PruneResult>(res);
    } catch (const Error& e) {
      REQUIRE(std::string(e.what()).starts_with("simulated crash"));
      changes = raw->changes;
      return std::optional<PruneResult>();
    }
  };
  auto verify = [&](const std::string& root, bool expect_no_warnings) {
    auto r = Repository::open(make_fs_backend(root), TestRepo::secret());
    CheckOptions co;
    co.read_data = true;
    CheckReport rep = check(*r, co);
    std::string problems;
    for (const auto& p : rep.problems) problems += problem_line(p) + "\n";
    INFO(problems);
    REQUIRE(rep.clean());
    if (expect_no_warnings) REQUIRE(rep.warnings() == 0);
    r->load_index();
    REQUIRE(file_named(read_snapshot(*r, load_snapshot(*r, s3.id)), "a.bin") == a);
    REQUIRE(r->list(FileType::snapshot).size() == 1);
  };

  int total = 0;
  {
    auto res = run(fresh_copy("complete"), -1, total);
    REQUIRE(res);
    REQUIRE(res->repacked.packs >= 1);
    REQUIRE(res->deleted.packs >= 1);
    REQUIRE(res->unindexed.packs >= 1);
    verify((t.dir.path / "complete").string(), true);
  }
  REQUIRE(total >= 4);
  for (int k = 0; k < total; ++k) {
    INFO("crash at change " << k << " of " << total);
    std::string root = fresh_copy("crash");
    int changes = 0;
    REQUIRE_FALSE(run(root, k, changes));
    verify(root, false);
    // The next prune finishes the job.
    REQUIRE(run(root, -1, changes));
    verify(root, true);
  }
}
