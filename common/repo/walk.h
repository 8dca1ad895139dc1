#pragma once
// Walks over a snapshot's trees that stay bounded on a hostile or damaged
// repository. Trees are content-addressed and may share subtrees, so a few small
// tree blobs can describe an astronomical number of paths (41 trees: 2^40 paths),
// and nothing in a tree blob bounds how deep the directories nest. Therefore:
//  - no walk recurses: every walk keeps its own stack;
//  - every walk refuses a tree nested deeper than kMaxTreeDepth, the one limit
//    the archiver enforces at backup time too (docs/repository-format.md);
//  - a walk that expands paths (ls, restore) counts the entries it visits and stops
//    past a bound (kMaxWalkEntries unless raised), naming the snapshot;
//  - a walk that needs only the set of reachable blobs (check, prune) visits each
//    tree id once (see TreeShapes).
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/repo/repository.h"
#include "common/repo/snapshot.h"
#include "common/repo/tree.h"

namespace cairn::repo {

// The deepest a snapshot nests: a path inside a snapshot has at most this many
// components ('/a/b/c' has 3), so a directory at this depth has no subtree. The
// archiver records such a directory without its contents and names it as an error
// (the snapshot is partial); check reports a deeper tree; ls, restore and every
// other walk refuse to go below it.
constexpr size_t kMaxTreeDepth = 2048;

// The most entries (files, directories, links...) a walk that expands paths visits
// in one snapshot by default: generous for real trees (tens of millions of files),
// small enough that a tree bomb ends in seconds with a clear error. Raise it with
// 'cairnctl repo ls|restore --max-entries'.
constexpr uint64_t kMaxWalkEntries = 50'000'000;

// A walk that has visited this many entries counts what the whole snapshot holds
// (each tree read once, see TreeShapes) and stops at once when that is more than
// its bound: a tree bomb is refused after a second, not after max_entries.
constexpr uint64_t kShapeCheckEntries = 1'000'000;

struct WalkLimits {
  uint64_t max_entries = kMaxWalkEntries;
  // The visitor enters everything (no --exclude): the whole tree's count is what
  // the walk will visit, so the check above applies.
  bool whole_tree = true;
};

// What a walk reports to its user. Paths are inside the snapshot ('/srv/a/f').
class TreeVisitor {
 public:
  virtual ~TreeVisitor() = default;
  // Every node, in pre-order, each listing in name order. For a directory, returning
  // false skips its subtree (and leave() is not called).
  virtual bool enter(const std::string& path, Node& node, size_t depth) = 0;
  // A directory whose subtree was walked (or that has none), after its last descendant.
  virtual void leave(const std::string& path, Node& node, size_t depth) { (void)path, (void)node, (void)depth; }
  // A subtree that cannot be read (why: the reason): return true to go on without
  // it, false to end the walk with the error. The root tree is never excused.
  virtual bool unreadable(const std::string& path, const std::string& why) {
    (void)path, (void)why;
    return false;
  }
  // A directory whose subtree lies deeper than kMaxTreeDepth: true goes on without
  // it, false (the default) ends the walk with the error.
  virtual bool too_deep(const std::string& path, const std::string& why) {
    (void)path, (void)why;
    return false;
  }
};

// Walks a snapshot's tree depth-first without recursion, reading each directory's
// nodes as it goes (TreeReader): it holds the trees of the directories from the
// root to the one it is in, not their nodes. A tree that turns out malformed
// part way is unreadable() from there on. Throws Error(Errc::corrupt)
// for a tree the visitor does not excuse (unreadable, or nested too deep) and
// Error(Errc::unsupported) once more than limits.max_entries entries were visited;
// both messages name the snapshot, the path and what to do.
void walk_snapshot(Repository& r, const Snapshot& s, TreeVisitor& v, const WalkLimits& limits = {});

// The same walk over trees from anywhere (a fuzz target's in-memory trees, a test):
// load returns the tree with that id or throws Error. snapshot_id names the walk in
// messages.
using TreeLoader = std::function<Tree(const BlobId&)>;
void walk_tree(const BlobId& root, const TreeLoader& load, const std::string& snapshot_id, TreeVisitor& v, const WalkLimits& limits = {});

// The message for a directory nested too deep, the same from every command.
std::string too_deep_message(const std::string& snapshot_id, const std::string& path);

// The shape of a tree as a path-expanding walk would see it, computed by visiting
// each tree id once (a shared subtree is counted, not walked, again).
struct TreeShape {
  uint64_t height = 0;   // levels of trees, this one counting 1; UINT64_MAX for a cycle
  uint64_t entries = 0;  // entries an expanding walk would visit (saturating at UINT64_MAX)
};

// What TreeShapes needs of a tree: how many entries it lists and the subtrees
// its directories name (repeats kept), not the nodes themselves.
struct TreeListing {
  uint64_t entries = 0;
  std::vector<BlobId> subtrees;
};
TreeListing list_tree(TreeReader& r);  // reads every node of r

// Visits every tree reachable from the roots it is given once, without recursion
// (the stack holds at most one frame per distinct tree), for walks that only need
// the set of reachable blobs (check, prune) or the shape of a snapshot.
class TreeShapes {
 public:
  // load: the tree, or nullopt when it cannot be read (the caller reports why; an
  // unreadable tree counts as an empty one). Called once per tree id.
  using Loader = std::function<std::optional<Tree>(const BlobId&)>;
  // The same, for a caller that reads each tree's nodes as they come
  // (TreeReader) and keeps none of them.
  using Lister = std::function<std::optional<TreeListing>(const BlobId&)>;
  explicit TreeShapes(Loader load);
  explicit TreeShapes(Lister list) : load_(std::move(list)) {}
  // Walks what is not known yet below root; returns root's shape.
  TreeShape of(const BlobId& root);
  size_t trees() const { return shapes_.size(); }

 private:
  Lister load_;
  std::unordered_map<BlobId, TreeShape, BlobIdHash> shapes_;
};

}  // namespace cairn::repo
