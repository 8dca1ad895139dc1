// check and repair on real repositories in a temp dir: what an operator sees after
// damage, and that repair brings every file back.
#include "common/repo/checker.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <random>

#include "common/repo/archiver.h"
#include "common/repo/tree.h"
#include "common/util/fs.h"
#include "repo_test_util.h"

using namespace cairn;
using namespace cairn::repo;
namespace fs = std::filesystem;

using namespace cairn::repo::test;

namespace {

void write_bytes(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  REQUIRE(f.good());
}

struct Fixture {
  TempDir tmp;
  std::string repo_path = tmp.path + "/repo";
  std::string src = tmp.path + "/src";
  Secret secret{Secret::Kind::passphrase, "correct horse"};
  std::map<std::string, Bytes> files;  // absolute path -> content
  Snapshot snap;

  Fixture() {
    auto be = make_fs_backend(repo_path);
    InitOptions io;
    io.kdf = KdfParams{.scrypt = {1024, 8, 1}};
    io.pack_size = 1u << 16;  // small packs: several of them from a small source
    Repository::init(*be, secret, io);
    fs::create_directories(src + "/sub");
    files[src + "/big.bin"] = random_bytes(3 << 20, 1);
    files[src + "/notes.txt"] = random_bytes(100000, 2);
    files[src + "/sub/small.dat"] = random_bytes(5000, 3);
    for (const auto& [p, b] : files) write_bytes(p, b);
    auto r = open();
    BackupOptions bo;
    bo.paths = {src};
    bo.threads = 2;
    snap = backup(*r, bo).snapshot;
  }

  std::unique_ptr<Repository> open() {
    auto r = Repository::open(make_fs_backend(repo_path), secret);
    r->load_index();
    return r;
  }

  std::string pack_path(const BlobId& pack) {
    std::string h = id_hex(pack);
    return repo_path + "/data/" + h.substr(0, 2) + "/" + h;
  }
  std::vector<std::string> index_paths() {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(repo_path + "/index")) out.push_back(e.path().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

// The node for an absolute path in a snapshot's tree.
Node find_node(Repository& r, BlobId tree, const std::string& path) {
  Node found;
  size_t pos = 1;
  while (true) {
    size_t slash = path.find('/', pos);
    std::string name = path.substr(pos, slash == std::string::npos ? std::string::npos : slash - pos);
    Tree t = decode_tree_bytes(r.load_blob(tree));
    auto it = std::find_if(t.nodes.begin(), t.nodes.end(), [&](const Node& n) { return n.name == name; });
    REQUIRE(it != t.nodes.end());
    if (slash == std::string::npos) return *it;
    REQUIRE(it->subtree);
    tree = *it->subtree;
    pos = slash + 1;
  }
}

// Reads every file of the snapshot back through the index, as restore would.
void require_all_files_readable(Fixture& f) {
  auto r = f.open();
  for (const auto& [path, content] : f.files) {
    Node n = find_node(*r, f.snap.tree, path);
    Bytes back;
    for (const auto& id : n.content) {
      Bytes b = r->load_blob(id);
      back.insert(back.end(), b.begin(), b.end());
    }
    REQUIRE(back == content);
  }
}

const CheckProblem* find_problem(const CheckReport& rep, const std::string& kind) {
  for (const auto& p : rep.problems)
    if (p.kind == kind) return &p;
  return nullptr;
}

bool contains(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }

std::string describe(const CheckReport& rep) {
  std::string s;
  for (const auto& p : rep.problems) s += problem_line(p) + "\n";
  return s;
}

}  // namespace

TEST_CASE("a freshly written repository checks clean, with and without reading data") {
  Fixture f;
  auto r = f.open();
  CheckReport rep = check(*r);
  INFO(describe(rep));
  REQUIRE(rep.problems.empty());
  REQUIRE(rep.snapshots == 1);
  REQUIRE(rep.packs > 2);
  REQUIRE(rep.trees >= 3);

  CheckOptions o;
  o.read_data = true;
  std::vector<Progress> seen;
  std::mutex mu;
  o.progress = [&](const Progress& p) {
    std::lock_guard lk(mu);
    seen.push_back(p);
  };
  o.progress_interval = std::chrono::milliseconds(0);
  rep = check(*r, o);
  INFO(describe(rep));
  REQUIRE(rep.problems.empty());
  REQUIRE(rep.packs_read == rep.packs);
  REQUIRE(rep.bytes_read == rep.pack_bytes);
  REQUIRE(rep.blobs_verified >= rep.blobs);
  REQUIRE(!seen.empty());
  REQUIRE(seen.back().phase == "done");
  REQUIRE(seen.back().bytes_done == rep.pack_bytes);
  REQUIRE(seen.back().bytes_total == rep.pack_bytes);
}

TEST_CASE("one flipped byte in a pack: read-data check names the pack, the blob, the snapshot and the file") {
  Fixture f;
  BlobId blob, pack;
  {
    auto r = f.open();
    Node n = find_node(*r, f.snap.tree, f.src + "/big.bin");
    REQUIRE(n.content.size() >= 1);
    blob = n.content.back();
    auto loc = r->index().lookup(blob);
    REQUIRE(loc);
    pack = loc->pack;
    std::fstream io(f.pack_path(pack), std::ios::in | std::ios::out | std::ios::binary);
    io.seekg(loc->offset + loc->length / 2);
    char c;
    io.read(&c, 1);
    c ^= 0x20;
    io.seekp(loc->offset + loc->length / 2);
    io.write(&c, 1);
    REQUIRE(io.good());
  }
  auto r = f.open();
  // The structure is intact: only reading the data finds this.
  REQUIRE(check(*r).errors() == 0);

  CheckOptions o;
  o.read_data = true;
  o.threads = 2;
  CheckReport rep = check(*r, o);
  INFO(describe(rep));
  REQUIRE(!rep.clean());
  const CheckProblem* p = find_problem(rep, "blob_damaged");
  REQUIRE(p);
  REQUIRE(p->severity == Severity::error);
  REQUIRE(p->object == "data/" + id_hex(pack).substr(0, 2) + "/" + id_hex(pack));
  REQUIRE(p->blobs == std::vector<std::string>{id_hex(blob)});
  REQUIRE(p->message.find(id_hex(blob)) != std::string::npos);
  REQUIRE(p->snapshots == std::vector<std::string>{f.snap.id});
  REQUIRE(p->paths == std::vector<std::string>{f.src + "/big.bin"});
  std::string line = problem_line(*p);
  REQUIRE(line.find(id_hex(pack)) != std::string::npos);
  REQUIRE(line.find(f.snap.id.substr(0, 8)) != std::string::npos);
  REQUIRE(line.find(f.src + "/big.bin") != std::string::npos);
  // A pack is named by its header, which is intact: the damaged blob is the one
  // error, not the pack's name.
  REQUIRE_FALSE(find_problem(rep, "pack_damaged"));
  REQUIRE(rep.errors() == 1);
  // Nothing else is blamed.
  for (const auto& q : rep.problems) REQUIRE(q.object == p->object);
}

TEST_CASE("a truncated index file is reported and repair brings every file back") {
  Fixture f;
  auto idx = f.index_paths();
  REQUIRE(!idx.empty());
  std::string name = fs::path(idx.front()).filename().string();
  REQUIRE(::truncate(idx.front().c_str(), off_t(fs::file_size(idx.front()) / 2)) == 0);

  auto r = f.open();
  CheckReport rep = check(*r);
  INFO(describe(rep));
  REQUIRE(!rep.clean());
  const CheckProblem* p = find_problem(rep, "index_damaged");
  REQUIRE(p);
  REQUIRE(p->object == "index/" + name);
  REQUIRE(p->message.rfind("index/" + name + " is damaged", 0) == 0);
  REQUIRE(p->message.find("repair index") != std::string::npos);
  // The packs it listed are found and point to the repair.
  const CheckProblem* orphan = find_problem(rep, "pack_unindexed");
  REQUIRE(orphan);
  REQUIRE(orphan->message.find("is not in any index") != std::string::npos);

  RepairIndexResult res = repair_index(*r);
  REQUIRE(res.bad_packs.empty());
  REQUIRE(res.packs == rep.packs);
  REQUIRE(contains(res.superseded, name));
  REQUIRE(!fs::exists(idx.front()));

  auto r2 = f.open();
  CheckOptions o;
  o.read_data = true;
  rep = check(*r2, o);
  INFO(describe(rep));
  REQUIRE(rep.problems.empty());
  require_all_files_readable(f);
}

TEST_CASE("deleted index files are reported as lost data and repair restores access to every blob") {
  Fixture f;
  for (const auto& p : f.index_paths()) fs::remove(p);
  auto r = f.open();
  REQUIRE(r->index().blob_count() == 0);
  CheckReport rep = check(*r);
  INFO(describe(rep));
  REQUIRE(!rep.clean());
  // Snapshots need these packs: an error naming the snapshot and its files, and the fix.
  bool named = false;
  for (const auto& p : rep.problems) {
    if (p.kind != "pack_unindexed" || p.severity != Severity::error) continue;
    REQUIRE(p.message.find("repair index") != std::string::npos);
    REQUIRE(contains(p.snapshots, f.snap.id));
    if (contains(p.paths, f.src + "/big.bin")) named = true;
  }
  REQUIRE(named);

  RepairIndexResult res = repair_index(*r);
  REQUIRE(res.bad_packs.empty());
  REQUIRE(res.index_files.size() >= 1);
  REQUIRE(check(*f.open()).problems.empty());
  require_all_files_readable(f);
  // A second backup of the same files reuses everything the repaired index describes.
  auto r3 = f.open();
  BackupOptions bo;
  bo.paths = {f.src};
  bo.force = true;
  auto b = backup(*r3, bo);
  REQUIRE(b.stats.bytes_raw_new < 64 * 1024);  // trees at most: no file data is stored again
}

TEST_CASE("a removed pack: its blobs are named with the snapshot and the files that lose them") {
  Fixture f;
  BlobId blob, pack;
  {
    auto r = f.open();
    Node n = find_node(*r, f.snap.tree, f.src + "/big.bin");
    blob = n.content.front();
    pack = r->index().lookup(blob)->pack;
  }
  fs::remove(f.pack_path(pack));
  auto r = f.open();
  CheckReport rep = check(*r);
  INFO(describe(rep));
  REQUIRE(!rep.clean());
  const CheckProblem* p = find_problem(rep, "pack_missing");
  REQUIRE(p);
  REQUIRE(p->severity == Severity::error);
  REQUIRE(p->object.find(id_hex(pack)) != std::string::npos);
  REQUIRE(contains(p->blobs, id_hex(blob)));
  REQUIRE(p->snapshots == std::vector<std::string>{f.snap.id});
  REQUIRE(contains(p->paths, f.src + "/big.bin"));
  // Repair cannot bring back data; check stays honest afterwards.
  repair_index(*r);
  REQUIRE(!check(*f.open()).clean());
}

TEST_CASE("repair leaves a pack with an unreadable header alone and keeps its old index entries") {
  Fixture f;
  BlobId pack;
  {
    auto r = f.open();
    pack = r->index().lookup(find_node(*r, f.snap.tree, f.src + "/notes.txt").content.front())->pack;
  }
  // Damage the trailer only: the blobs before it are intact.
  std::string pp = f.pack_path(pack);
  {
    std::fstream io(pp, std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(std::streamoff(fs::file_size(pp) - 2));
    io.write("XX", 2);
    REQUIRE(io.good());
  }
  auto r = f.open();
  RepairIndexResult res = repair_index(*r);
  REQUIRE(res.bad_packs.size() == 1);
  REQUIRE(res.bad_packs[0].first == id_hex(pack));
  REQUIRE(fs::exists(pp));
  // The file's blobs are still reachable through the carried-over entries.
  require_all_files_readable(f);
  CheckOptions o;
  o.read_data = true;
  CheckReport rep = check(*f.open(), o);
  INFO(describe(rep));
  const CheckProblem* h = find_problem(rep, "pack_header");
  REQUIRE(h);
  REQUIRE(h->object.find(id_hex(pack)) != std::string::npos);
  REQUIRE(find_problem(rep, "blob_damaged") == nullptr);
}

TEST_CASE("the pack of a snapshot's root tree lost: check names the snapshot's source paths, not '/'") {
  Fixture f;
  BlobId pack;
  {
    auto r = f.open();
    pack = r->index().lookup(f.snap.tree)->pack;
  }
  fs::remove(f.pack_path(pack));
  CheckReport rep = check(*f.open());
  INFO(describe(rep));
  const CheckProblem* p = find_problem(rep, "pack_missing");
  REQUIRE(p);
  REQUIRE(contains(p->paths, "the whole snapshot (" + f.src + ")"));
  REQUIRE(!contains(p->paths, "/"));
}
