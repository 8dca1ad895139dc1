// Trees (tree blobs). The input is a set of tree blobs separated by NUL
// bytes; "#N" in blob k (N > k, decimal) stands for the id of blob N, so the
// fuzzer can build DAGs of shared subtrees (the DAG bomb: 41 blobs, 2^40
// paths) and chains of nested directories (deep trees) without forging
// keyed hashes. Blob 0 is the root of a snapshot. The trees are stored as real
// (encrypted, compressed) blobs and walked the way `cairnctl repo check` and
// `repo restore` walk them; each blob is also decoded alone.
//
// Bounds: -rss_limit_mb and -timeout (docs/testing.md) turn an unbounded walk
// into a report.
#include "common/repo/tree.h"

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "common/repo/checker.h"
#include "common/repo/restorer.h"
#include "common/repo/snapshot.h"
#include "common/repo/walk.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "fuzz_repo.h"

using namespace cairn;

namespace {

constexpr size_t kMaxBlobs = 1u << 16;

// Replaces "#N" by the hex id of blob N when N > k and is known.
std::string resolve(std::string_view blob, size_t k, const std::vector<std::string>& ids) {
  std::string out;
  for (size_t i = 0; i < blob.size(); ++i) {
    if (blob[i] == '#' && i + 1 < blob.size() && std::isdigit(static_cast<unsigned char>(blob[i + 1]))) {
      size_t j = i + 1, n = 0;
      while (j < blob.size() && std::isdigit(static_cast<unsigned char>(blob[j])) && n < kMaxBlobs) n = n * 10 + size_t(blob[j++] - '0');
      if (n > k && n < ids.size() && !ids[n].empty()) {
        out += ids[n];
        i = j - 1;
        continue;
      }
    }
    out += blob[i];
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> blobs;
  for (size_t at = 0; blobs.size() < kMaxBlobs;) {
    size_t nul = in.find('\0', at);
    blobs.push_back(in.substr(at, nul == std::string_view::npos ? std::string_view::npos : nul - at));
    if (nul == std::string_view::npos) break;
    at = nul + 1;
  }
  fuzz::FuzzRepo fr;
  try {
    auto r = fr.open();
    std::vector<std::string> ids(blobs.size());
    repo::BlobId root{};
    for (size_t k = blobs.size(); k-- > 0;) {
      std::string text = resolve(blobs[k], k, ids);
      try {
        (void)repo::decode_tree_bytes(as_bytes(text));
      } catch (const Error&) {
      }
      repo::BlobId id{};
      r->save_blob(repo::BlobType::tree, as_bytes(text), id);
      ids[k] = to_hex(id);
      if (k == 0) root = id;
    }
    r->flush();
    repo::Snapshot s;
    s.time = "2026-01-01T00:00:00Z";
    s.time_unix = 1767225600;
    s.hostname = "fuzz";
    s.paths = {"/data"};
    s.tree = root;
    repo::save_snapshot(*r, s);

    // The listing walk of `repo ls` (it recursed on depth and expanded shared
    // subtrees without end). Bounds small enough that a DAG bomb ends in
    // milliseconds here; the production default is kMaxWalkEntries.
    constexpr uint64_t kEntries = 20000;
    struct Count : repo::TreeVisitor {
      uint64_t n = 0;
      bool enter(const std::string&, repo::Node&, size_t) override { return ++n, true; }
    } count;
    try {
      repo::walk_snapshot(*r, s, count, {.max_entries = kEntries});
    } catch (const Error&) {
    }

    repo::CheckOptions copt;
    copt.threads = 1;
    (void)repo::check(*r, copt);

    repo::RestoreOptions ropt;
    ropt.target = fr.dir() + "/restore";
    ropt.threads = 2;
    ropt.max_entries = kEntries;
    ropt.max_plan_bytes = 64u << 20;
    (void)repo::restore(*r, s.id, ropt);
  } catch (const Error& e) {
    if (std::getenv("CAIRN_FUZZ_DEBUG")) std::fprintf(stderr, "fuzz_tree: %s\n", e.what());
  }
  return 0;
}
