// Writes the seed corpora of the repository fuzz targets (tests/fuzz/corpus)
// from objects made by the real code: a snapshot, an index file, a lock, tree
// blobs, a pack header, the key slot and config of FuzzRepo; and, where
// cairnctl's export archive is built, export archives written by its writer
// (valid, truncated, damaged). Run it after a format change:
//   build/tests/fuzz/fuzz_make_seeds tests/fuzz/corpus
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "common/crypto/crypto.h"
#include "common/repo/compress.h"
#include "common/repo/index.h"
#include "common/repo/lock.h"
#include "common/repo/pack.h"
#include "common/repo/snapshot.h"
#include "common/repo/tree.h"
#include "common/util/encoding.h"
#include "fuzz_repo.h"
#ifdef CAIRN_SEEDS_EXPORT_ARCHIVE
#include <nlohmann/json.hpp>

#include "cairnctl/archive/export_archive.h"
#include "common/util/fs.h"
#endif

using namespace cairn;
namespace fs = std::filesystem;

namespace {

fs::path out_dir;

void write(const std::string& target, const std::string& name, std::string_view bytes) {
  fs::create_directories(out_dir / target);
  std::ofstream(out_dir / target / name, std::ios::binary | std::ios::trunc).write(bytes.data(), std::streamsize(bytes.size()));
}

// A file's plaintext: encoding byte, u32le length of the text, body.
std::string file_plain(std::string_view text, bool zstd) {
  std::string out(5, '\0');
  uint32_t n = uint32_t(text.size());
  for (int i = 0; i < 4; ++i) out[1 + i] = char(n >> (8 * i));
  std::span<const uint8_t> z;
  if (zstd && repo::compress_if_useful(as_bytes(text), z, 3)) {
    out[0] = 1;
    out.append(reinterpret_cast<const char*>(z.data()), z.size());
  } else {
    out.append(text);
  }
  return out;
}

std::string text_of(const Bytes& b) { return std::string(b.begin(), b.end()); }

repo::BlobId id_of(uint8_t fill) {
  repo::BlobId id{};
  id.fill(fill);
  return id;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  out_dir = argv[1];
  fuzz::FuzzRepo fr;
  auto r = fr.open();

  // Snapshot: as save_snapshot writes it.
  repo::Snapshot s;
  s.time = "2026-01-01T00:00:00Z";
  s.time_unix = 1767225600;
  s.hostname = "node-1";
  s.username = "root";
  s.paths = {"/etc", "/srv/data"};
  s.tags = {"set:abc"};
  s.tree = id_of(0xab);
  s.errors = {{"/etc/shadow", "permission denied"}};
  s.summary = {{"files", 3}, {"bytes", 1234}};
  s.program = "cairnctl 0.1.0";
  std::string snap_text = text_of(r->load_file(repo::FileType::snapshot, repo::save_snapshot(*r, s)));
  write("snapshot", "raw.bin", file_plain(snap_text, false));
  write("snapshot", "zstd.bin", file_plain(snap_text, true));

  // Index file: two packs, data and tree blobs.
  repo::IndexFile idx;
  idx.supersedes = {std::string(64, 'e')};
  idx.packs.push_back(
      {id_of(1), {{id_of(2), repo::BlobType::data, repo::kBlobCompressed, 0, 100, 300}, {id_of(3), repo::BlobType::tree, 0, 100, 50, 22}}});
  idx.packs.push_back({id_of(4), {{id_of(5), repo::BlobType::data, 0, 0, 4096, 4050}}});
  std::string idx_text = repo::encode_index_file(idx).dump();
  write("index_file", "raw.bin", file_plain(idx_text, false));
  write("index_file", "zstd.bin", file_plain(idx_text, true));

  // Lock: as Lock::acquire writes it.
  {
    auto lock = repo::Lock::acquire(*r, repo::LockKind::exclusive, "backup");
    std::string name = lock->file_name();
    std::string text = text_of(r->load_file(repo::FileType::lock, name));
    write("lock_file", "exclusive.bin", file_plain(text, false));
    write("lock_file", "exclusive-zstd.bin", file_plain(text, true));
    lock->release();
  }

  // Trees: a root with a file, a symlink and a directory whose subtree is
  // blob 1 ("#1"), which holds a file with sparse extents and an xattr.
  {
    repo::Tree leaf;
    repo::Node f;
    f.name = "data.bin";
    f.type = repo::NodeType::file;
    f.mode = 0644;
    f.size = 10;
    f.content = {id_of(9)};
    f.sparse = true;
    f.extents = {{0, 10}};
    f.xattrs = {{"user.note", Bytes{'h', 'i'}}};
    leaf.nodes.push_back(f);
    repo::Tree root;
    repo::Node d;
    d.name = "srv";
    d.type = repo::NodeType::dir;
    d.mode = 0755;
    d.subtree = id_of(0xcd);
    repo::Node l;
    l.name = "link";
    l.type = repo::NodeType::symlink;
    l.target = "srv/data.bin";
    repo::Node e;
    e.name = "empty";
    e.type = repo::NodeType::file;
    e.mode = 0600;
    root.nodes = {d, e, l};
    std::string root_text = repo::encode_tree_bytes(root);
    std::string hex = to_hex(id_of(0xcd));
    root_text.replace(root_text.find(hex), hex.size(), "#1");
    std::string both = root_text + std::string(1, '\0') + repo::encode_tree_bytes(leaf);
    write("tree", "two-levels.bin", both);
    write("tree", "single.bin", repo::encode_tree_bytes(leaf));
  }

  // Pack header, mode 0: a data section with a raw blob and a zstd one, and
  // the two header entries that locate them (ids as this repository makes them).
  {
    std::string raw = "0123456789abcdef", text(300, 'x');
    std::span<const uint8_t> z;
    if (!repo::compress_if_useful(as_bytes(text), z, 3)) return 1;
    // Each blob's bytes: its payload, then room for the AEAD overhead (the target seals the payload).
    std::string pad(crypto::kAeadOverhead, '\0');
    std::string section = raw + pad + std::string(reinterpret_cast<const char*>(z.data()), z.size()) + pad;
    std::string in(1, '\0');
    in += char(section.size() & 0xff);
    in += char(section.size() >> 8);
    in += section;
    auto entry = [&](repo::BlobType type, uint8_t flags, uint32_t len, uint32_t raw_len, const repo::BlobId& id) {
      uint8_t e[repo::kPackHeaderEntrySize] = {};
      e[0] = uint8_t(type);
      e[1] = flags;
      for (int i = 0; i < 4; ++i) e[2 + i] = uint8_t(len >> (8 * i)), e[6 + i] = uint8_t(raw_len >> (8 * i));
      std::copy(id.begin(), id.end(), e + 10);
      in.append(reinterpret_cast<const char*>(e), sizeof e);
    };
    const uint32_t o = uint32_t(crypto::kAeadOverhead);
    entry(repo::BlobType::data, 0, uint32_t(raw.size()) + o, uint32_t(raw.size()), r->blob_id(as_bytes(raw)));
    entry(repo::BlobType::tree, repo::kBlobCompressed, uint32_t(z.size()) + o, uint32_t(text.size()), r->blob_id(as_bytes(text)));
    write("pack_header", "two-blobs.bin", in);
  }

  // Key slot and config of the fuzz repository.
  write("key_slot", "valid.json", fuzz::FuzzRepo::valid_slot());
  write("repo_config", "valid.json", fuzz::FuzzRepo::valid_config());
  std::string tmpl =
      R"({"format":"cairn-repository","version":1,"id":"00112233445566778899aabbccddeeff","created":"2026-01-01T00:00:00Z","sealed":"@SEALED@"})";
  write("repo_config", "params.bin",
        tmpl + std::string(1, '\0') +
            R"({"chunker_seed":"MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM=","zstd_level":3,"pack_size":1048576})");
#ifdef CAIRN_SEEDS_EXPORT_ARCHIVE
  // Export archives (export_archive): meta.json and a small repo/, as
  // cairnctl export writes them, and damaged variants an import must refuse.
  {
    fs::path stage = fs::temp_directory_path() / "cairn-seeds-export";
    fs::remove_all(stage);
    fs::create_directories(stage / "repo" / "data" / "ab");
    auto put = [&](const std::string& name, std::string_view bytes) {
      std::ofstream(stage / name, std::ios::binary | std::ios::trunc).write(bytes.data(), std::streamsize(bytes.size()));
    };
    auto entry = [](std::string_view bytes) {
      return nlohmann::json{{"size", bytes.size()}, {"sha256", to_hex(crypto::sha256(as_bytes(bytes)))}};
    };
    const std::string config = R"({"version":2,"id":"seed"})", pack(100, 'p');
    put("repo/config", config);
    put("repo/data/ab/abcdef", pack);
    auto meta = [&](nlohmann::json files) {
      return nlohmann::json{{"format", ctl::export_archive::kFormat},
                            {"backup_set", {{"id", "bs-seed"}}},
                            {"snapshots", {{{"id", "0123abcd"}, {"component", "files"}}}},
                            {"files", std::move(files)}}
          .dump();
    };
    const nlohmann::json files = {{"repo/config", entry(config)}, {"repo/data/ab/abcdef", entry(pack)}};
    const std::vector<std::string> all = {"meta.json", "repo/config", "repo/data/ab/abcdef"};
    auto archive = [&](const std::string& seed, const std::string& meta_text, const std::vector<std::string>& names) {
      put("meta.json", meta_text);
      ctl::export_archive::write_archive((stage / "out.tar.gz").string(), stage.string(), names);
      std::ifstream in(stage / "out.tar.gz", std::ios::binary);
      std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      write("export_archive", seed, bytes);
      return bytes;
    };
    std::string valid = archive("valid.tar.gz", meta(files), all);
    write("export_archive", "truncated.tar.gz", valid.substr(0, valid.size() / 2));
    write("export_archive", "truncated-tail.tar.gz", valid.substr(0, valid.size() - 12));  // no gzip trailer
    nlohmann::json bad = files;
    bad["repo/config"]["sha256"] = std::string(64, '0');
    archive("bad-checksum.tar.gz", meta(bad), all);
    nlohmann::json partial = {{"repo/config", entry(config)}};
    archive("unlisted-file.tar.gz", meta(partial), all);
    archive("missing-file.tar.gz", meta(files), {"meta.json", "repo/config"});
    archive("no-meta.tar.gz", meta(files), {"repo/config"});
    put("evil", "x");
    archive("dotdot.tar.gz", meta(files), {"meta.json", "repo/../evil"});
    archive("wrong-format.tar.gz", R"({"format":"cairn-export/9","files":{}})", {"meta.json"});
    archive("format-not-string.tar.gz", R"({"format":1,"files":{}})", {"meta.json"});
    archive("sha-not-string.tar.gz", R"({"format":"cairn-export/1","files":{"repo/config":{"size":1,"sha256":7}}})", {"meta.json"});
    write("export_archive", "not-an-archive.bin", "cairn-export/1 meta.json repo/");
    fs::remove_all(stage);
  }
#endif
  return 0;
}
