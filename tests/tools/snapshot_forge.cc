// cairn-snapshot-forge: a test tool, never installed. It plays someone who
// holds a repository's password (any agent sharing the repository) and writes
// a snapshot in another writer's name: it loads that writer's snapshot and
// tree, points one file's content at a blob of its own choosing while keeping
// the file's metadata (inode, size, mtime, ctime), and saves a new snapshot
// with the same host, paths and tags and a newer time. A writer that takes
// "the newest snapshot of my host and paths" as its parent then records the
// forged content without reading the file (tests/integration/test_parent_trust.py).
//
//   cairn-snapshot-forge --repo DIR --password-file FILE --snapshot ID --path ABS_PATH --content-file FILE
// Prints the new snapshot's id.
#include <cstdio>
#include <string>
#include <vector>

#include "common/repo/repository.h"
#include "common/repo/snapshot.h"
#include "common/repo/storage/backend.h"
#include "common/repo/tree.h"
#include "common/util/error.h"
#include "common/util/fs.h"

using namespace cairn;

namespace {

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "cairn-snapshot-forge: %s\n", why.c_str());
  std::exit(2);
}

std::vector<std::string> split_path(const std::string& p) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string::npos) j = p.size();
    if (j > i) out.push_back(p.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

repo::Node* find(repo::Tree& t, const std::string& name) {
  for (auto& n : t.nodes)
    if (n.name == name) return &n;
  return nullptr;
}

// Rewrites the file at steps[at..] under tree t; returns the new tree's id.
repo::BlobId rewrite(repo::Repository& r, repo::Tree t, const std::vector<std::string>& steps, size_t at,
                     const std::vector<repo::BlobId>& content) {
  repo::Node* n = find(t, steps[at]);
  if (!n) die("no '" + steps[at] + "' in the snapshot's tree");
  if (at + 1 == steps.size()) {
    if (n->type != repo::NodeType::file) die("'" + steps[at] + "' is not a file");
    n->content = content;  // size, inode, mtime and ctime stay the victim's
    n->extents.clear();
    n->sparse = false;
  } else {
    if (n->type != repo::NodeType::dir || !n->subtree) die("'" + steps[at] + "' is not a directory");
    n->subtree = rewrite(r, repo::decode_tree_bytes(r.load_blob(*n->subtree)), steps, at + 1, content);
  }
  std::string bytes = repo::encode_tree_bytes(t);
  repo::BlobId id;
  r.save_blob(repo::BlobType::tree, as_bytes(bytes), id);
  return id;
}

}  // namespace

int main(int argc, char** argv) {
  std::string repo_dir, password_file, snapshot, path, content_file;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value after " + a);
      return argv[++i];
    };
    if (a == "--repo")
      repo_dir = next();
    else if (a == "--password-file")
      password_file = next();
    else if (a == "--snapshot")
      snapshot = next();
    else if (a == "--path")
      path = next();
    else if (a == "--content-file")
      content_file = next();
    else
      die("unknown argument '" + a + "'");
  }
  if (repo_dir.empty() || password_file.empty() || snapshot.empty() || path.empty() || content_file.empty())
    die("usage: --repo DIR --password-file FILE --snapshot ID --path ABS_PATH --content-file FILE");
  try {
    auto r = repo::Repository::open(repo::make_fs_backend(repo_dir),
                                    repo::Secret(repo::Secret::Kind::passphrase, read_secret_file(password_file)));
    r->load_index();
    repo::Snapshot victim = repo::load_snapshot(*r, repo::resolve_snapshot(*r, snapshot));
    Bytes data = read_file(content_file);
    repo::BlobId blob;
    r->save_blob(repo::BlobType::data, data, blob);
    repo::Snapshot forged = victim;
    forged.tree = rewrite(*r, repo::decode_tree_bytes(r->load_blob(victim.tree)), split_path(path), 0, {blob});
    r->flush();
    forged.time_unix = victim.time_unix + 1;  // newer than the victim's, whatever the clock says
    forged.time = repo::format_rfc3339(forged.time_unix);
    forged.parent = victim.id;
    forged.partial = false;
    forged.errors.clear();
    std::printf("%s\n", repo::save_snapshot(*r, forged).c_str());
  } catch (const std::exception& e) {
    die(e.what());
  }
  return 0;
}
