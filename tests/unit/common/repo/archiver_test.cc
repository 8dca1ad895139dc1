// The streaming archiver: trees are written as directories complete, in whatever
// order the files finish, and must still be exact and deterministic.
#include "common/repo/archiver.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>

#include "common/repo/restorer.h"
#include "common/repo/snapshot.h"
#include "common/repo/tree.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "repo_test_util.h"

using namespace cairn;
using namespace cairn::repo;
namespace fs = std::filesystem;
using namespace cairn::repo::test;

namespace {

struct TestRepo {
  TempDir dir;
  std::unique_ptr<Repository> r;
  TestRepo() {
    auto be = make_fs_backend(dir.path + "/repo");
    InitOptions io;
    io.kdf.scrypt.n = 1024;
    Secret s(Secret::Kind::passphrase, "pw");
    Repository::init(*be, s, io);
    r = Repository::open(std::move(be), s);
    r->load_index();
  }
  BackupResult backup(const std::string& path, unsigned threads = 2, bool force = false) {
    BackupOptions bo;
    bo.paths = {path};
    bo.threads = threads;
    bo.force = force;
    return repo::backup(*r, bo);
  }
  Tree tree(const BlobId& id) { return decode_tree_bytes(r->load_blob(id)); }
  // The tree id of an absolute directory path in a snapshot.
  BlobId subtree(const Snapshot& s, const std::string& path) {
    BlobId id = s.tree;
    for (const auto& part : fs::path(path)) {
      std::string name = part.string();
      if (name == "/" || name.empty()) continue;
      Tree t = tree(id);
      auto it = std::find_if(t.nodes.begin(), t.nodes.end(), [&](const Node& n) { return n.name == name; });
      REQUIRE(it != t.nodes.end());
      REQUIRE(it->subtree);
      id = *it->subtree;
    }
    return id;
  }
  void restore_to(const std::string& id, const std::string& target) {
    RestoreOptions ro;
    ro.target = target;
    RestoreResult res = restore(*r, id, ro);
    INFO((res.failures.empty() ? std::string() : res.failures[0].path + ": " + res.failures[0].reason));
    REQUIRE(res.failures.empty());
  }
};

struct St {
  struct stat st {};
  explicit St(const std::string& p) { REQUIRE(::lstat(p.c_str(), &st) == 0); }
};

// Every entry below src has the same type, mode, size, mtime and content below dst, and nothing more is there.
size_t compare(const std::string& src, const std::string& dst) {
  size_t n = 0;
  for (auto& e : fs::recursive_directory_iterator(src)) {
    std::string rel = e.path().string().substr(src.size());
    INFO("entry " << rel);
    St a(e.path().string()), b(dst + rel);
    CHECK((a.st.st_mode & S_IFMT) == (b.st.st_mode & S_IFMT));
    CHECK((a.st.st_mode & 07777) == (b.st.st_mode & 07777));
    CHECK(a.st.st_mtim.tv_sec == b.st.st_mtim.tv_sec);
    if (S_ISREG(a.st.st_mode)) {
      CHECK(a.st.st_size == b.st.st_size);
      CHECK(slurp(e.path().string()) == slurp(dst + rel));
    }
    ++n;
  }
  size_t m = 0;
  for (auto it = fs::recursive_directory_iterator(dst); it != fs::recursive_directory_iterator(); ++it) ++m;
  CHECK(m == n);
  return n;
}

}  // namespace

TEST_CASE("a deep and wide tree with hard links across directories restores exactly, with deterministic trees") {
  TestRepo repo;
  std::string src = repo.dir.path + "/src";
  // 6 levels deep, 4 directories wide at each of the first levels, files everywhere;
  // a big multi-chunk file early in the walk is hard-linked from directories that
  // otherwise finish long before it is stored.
  std::vector<std::string> dirs{src};
  for (size_t i = 0; i < dirs.size() && dirs.size() < 200; ++i) {
    size_t depth = size_t(std::count(dirs[i].begin() + long(src.size()), dirs[i].end(), '/'));
    if (depth >= 6) continue;
    for (int k = 0; k < (depth < 3 ? 4 : 1); ++k) dirs.push_back(dirs[i] + "/d" + std::to_string(depth) + "_" + std::to_string(k));
  }
  for (const auto& d : dirs) fs::create_directories(d);
  uint32_t seed = 1;
  for (const auto& d : dirs)
    for (int f = 0; f < 5; ++f, ++seed) write(d + "/f" + std::to_string(f), random_bytes(size_t(100 + 997 * f * (seed % 7)), seed));
  write(src + "/aaa-big.bin", random_bytes(12u << 20, 99));
  write(dirs[3] + "/small-first", random_bytes(5000, 98));
  REQUIRE(::link((src + "/aaa-big.bin").c_str(), (dirs.back() + "/big-link").c_str()) == 0);
  REQUIRE(::link((src + "/aaa-big.bin").c_str(), (dirs[dirs.size() / 2] + "/big-link2").c_str()) == 0);
  REQUIRE(::link((dirs[3] + "/small-first").c_str(), (dirs[1] + "/small-link").c_str()) == 0);
  REQUIRE(::link((dirs[3] + "/small-first").c_str(), (dirs[40] + "/small-link").c_str()) == 0);

  BackupResult first = repo.backup(src, 2, true);
  CHECK(first.snapshot.errors.empty());
  CHECK_FALSE(first.snapshot.partial);
  CHECK(first.files_new == dirs.size() * 5 + 2 + 4);
  CHECK(first.dirs == dirs.size());

  // Read again (force: no parent, every file read, different completion order on
  // threads): the trees come out byte for byte the same.
  // (The source's tree, not the root's: /tmp above it changes under other processes.)
  BackupResult again = repo.backup(src, 3, true);
  CHECK(repo.subtree(again.snapshot, src) == repo.subtree(first.snapshot, src));
  BackupResult single = repo.backup(src, 1, true);
  CHECK(repo.subtree(single.snapshot, src) == repo.subtree(first.snapshot, src));

  std::string out = repo.dir.path + "/out";
  repo.restore_to(first.snapshot.id, out);
  CHECK(compare(src, out + src) == dirs.size() - 1 + dirs.size() * 5 + 2 + 4);
  // hard links share one inode again, across directories
  St big(out + src + "/aaa-big.bin");
  CHECK(big.st.st_nlink == 3);
  CHECK(St(out + dirs.back() + "/big-link").st.st_ino == big.st.st_ino);
  CHECK(St(out + dirs[dirs.size() / 2] + "/big-link2").st.st_ino == big.st.st_ino);
  CHECK(St(out + dirs[1] + "/small-link").st.st_ino == St(out + dirs[3] + "/small-first").st.st_ino);
  CHECK(St(out + dirs[40] + "/small-link").st.st_ino == St(out + dirs[3] + "/small-first").st.st_ino);
}

TEST_CASE("an unchanged directory reuses the parent snapshot's tree; changed ones and their ancestors get new trees") {
  TestRepo repo;
  std::string src = repo.dir.path + "/src";
  for (int i = 0; i < 20; ++i) {
    std::string d = src + "/same" + std::to_string(i) + "/inner";
    fs::create_directories(d);
    write(d + "/x", random_bytes(3000, uint32_t(i)));
    write(src + "/same" + std::to_string(i) + "/y", random_bytes(2000, uint32_t(100 + i)));
  }
  fs::create_directories(src + "/changed/inner");
  write(src + "/changed/inner/z", random_bytes(4000, 7));
  write(src + "/changed/keep", random_bytes(4000, 8));
  BackupResult first = repo.backup(src);

  write(src + "/changed/inner/z", random_bytes(4000, 9));  // new content: new chunk, new trees up to the root
  BackupResult second = repo.backup(src);
  CHECK(second.snapshot.parent == first.snapshot.id);
  CHECK(second.files_changed == 1);
  CHECK(second.files_unmodified == 41);
  for (int i = 0; i < 20; i += 7) {
    std::string d = src + "/same" + std::to_string(i);
    CHECK(repo.subtree(second.snapshot, d) == repo.subtree(first.snapshot, d));
    CHECK(repo.subtree(second.snapshot, d + "/inner") == repo.subtree(first.snapshot, d + "/inner"));
  }
  CHECK(repo.subtree(second.snapshot, src + "/changed/inner") != repo.subtree(first.snapshot, src + "/changed/inner"));
  CHECK(repo.subtree(second.snapshot, src + "/changed") != repo.subtree(first.snapshot, src + "/changed"));
  CHECK(repo.subtree(second.snapshot, src) != repo.subtree(first.snapshot, src));
  // Reused trees are not even encoded again: re-encoding the 40 unchanged
  // directories would offer their (identical) trees to the repository a second time.
  CHECK(second.stats.blobs_dedup == 0);

  std::string out = repo.dir.path + "/out";
  repo.restore_to(second.snapshot.id, out);
  compare(src, out + src);
}

TEST_CASE("two sources, one inside the other and one excluded on the way, are each backed up once") {
  TestRepo repo;
  std::string src = repo.dir.path + "/src";
  fs::create_directories(src + "/cache/keep");
  fs::create_directories(src + "/data");
  write(src + "/cache/junk", random_bytes(100, 1));
  write(src + "/cache/keep/wanted", random_bytes(100, 2));
  write(src + "/data/a", random_bytes(100, 3));
  BackupOptions bo;
  bo.paths = {src + "/cache/keep", src, src + "/data"};
  bo.excludes = {"cache"};
  BackupResult res = repo::backup(*repo.r, bo);
  CHECK(res.snapshot.errors.empty());
  CHECK(res.files_new == 2);
  std::string out = repo.dir.path + "/out";
  repo.restore_to(res.snapshot.id, out);
  CHECK(slurp(out + src + "/cache/keep/wanted") == slurp(src + "/cache/keep/wanted"));
  CHECK(slurp(out + src + "/data/a") == slurp(src + "/data/a"));
  CHECK_FALSE(fs::exists(out + src + "/cache/junk"));
}

TEST_CASE("progress totals are only reported as known once they are final or counted") {
  TestRepo repo;
  std::string src = repo.dir.path + "/src";
  fs::create_directories(src + "/d");
  for (int i = 0; i < 50; ++i) write(src + "/d/f" + std::to_string(i), random_bytes(20000, uint32_t(i)));
  std::mutex mu;
  std::vector<Progress> seen;
  BackupOptions bo;
  bo.paths = {src};
  bo.progress_interval = std::chrono::milliseconds(1);
  bo.progress = [&](const Progress& p) {
    std::lock_guard g(mu);
    seen.push_back(p);
  };
  repo::backup(*repo.r, bo);
  REQUIRE_FALSE(seen.empty());
  for (const auto& p : seen) {
    CHECK(p.files_done <= p.files_total);
    CHECK(p.bytes_done <= p.bytes_total);
    if (p.totals_known) {
      CHECK(p.files_total == 50);
      CHECK(p.bytes_total == 50 * 20000);
    }
  }
  CHECK(seen.back().phase == "done");
  CHECK(seen.back().totals_known);
  CHECK(seen.back().files_done == 50);
}

TEST_CASE("chunks cut in place in shared read blocks are exactly the chunks of each whole file") {
  // Readers cut chunks inside blocks that several small files share, carry the
  // look-ahead into a fresh block when one fills, and hand the workers slices of
  // blocks still being read into. None of that may move a boundary: each file's
  // content ids must be those of cutting the whole file at once.
  TestRepo repo;
  std::string src = repo.dir.path + "/src";
  fs::create_directories(src + "/small");
  std::map<std::string, Bytes> files;
  auto add = [&](const std::string& rel, Bytes data) {
    write(src + "/" + rel, data);
    files[rel] = std::move(data);
  };
  Bytes db = random_bytes(3u << 20, 11);
  for (size_t i = 0; i < db.size(); i += 4096) std::fill(db.begin() + long(i), db.begin() + long(i + 1024), uint8_t(i >> 12));
  add("etcd.db", db);                                            // page profile: 32 KiB chunks
  add("00000000000000000000.log", random_bytes(21u << 20, 12));  // log profile, spans several blocks
  add("big.bin", random_bytes(11u << 20, 13));                   // standard profile
  for (int i = 0; i < 150; ++i) add("small/f" + std::to_string(i), random_bytes(size_t(1 + 997 * (i % 31)), uint32_t(100 + i)));

  for (unsigned threads : {1u, 2u, 3u}) {
    BackupResult res = repo.backup(src, threads, true);
    REQUIRE(res.snapshot.errors.empty());
    std::map<std::string, std::vector<BlobId>> got;
    std::function<void(const BlobId&, const std::string&)> collect = [&](const BlobId& id, const std::string& prefix) {
      for (const Node& n : repo.tree(id).nodes) {
        if (n.type == NodeType::dir)
          collect(*n.subtree, prefix + n.name + "/");
        else if (n.type == NodeType::file)
          got[prefix + n.name] = n.content;
      }
    };
    collect(repo.subtree(res.snapshot, src), "");
    REQUIRE(got.size() == files.size());
    for (const auto& [rel, data] : files) {
      INFO(rel << " with " << threads << " threads");
      Chunker ch(repo.r->gear(), profile_params(choose_profile(fs::path(rel).filename().string(), data.size())));
      std::vector<BlobId> want;
      for (size_t off = 0; off < data.size();) {
        size_t n = ch.cut(data.data() + off, data.size() - off);
        want.push_back(repo.r->blob_id(std::span<const uint8_t>(data.data() + off, n)));
        off += n;
      }
      CHECK(got[rel] == want);
    }
  }
  std::string out = repo.dir.path + "/out";
  repo.restore_to("latest", out);
  CHECK(compare(src, out + src) == files.size() + 1);
}
