#include "common/repo/walk.h"

#include <unordered_set>
#include <vector>

#include "common/util/error.h"

namespace cairn::repo {

std::string too_deep_message(const std::string& snapshot_id, const std::string& path) {
  return "snapshot '" + snapshot_id.substr(0, 8) + "': '" + path + "' has directories nested deeper than " + std::to_string(kMaxTreeDepth) +
         " levels, the limit of every cairn command (docs/repository-format.md); what lies below it is not read (a damaged or "
         "hostile snapshot: run 'cairnctl repo check'; leave it out with --exclude)";
}

namespace {

[[noreturn]] void too_many(const std::string& sid, const std::string& what, const WalkLimits& limits) {
  throw Error(Errc::unsupported, "snapshot '" + sid + "' " + what + " entries, more than the " + std::to_string(limits.max_entries) +
                                     " a walk visits (a tree whose directories share subtrees can describe more paths than any "
                                     "disk holds); if it really is that large, raise the bound with --max-entries, otherwise run "
                                     "'cairnctl repo check'");
}

struct Frame {
  TreeReader reader;
  Node node;              // the node last read: a directory's stays for leave()
  size_t parent_len = 0;  // length of the walk's path before this directory's name
};

using ReaderLoader = std::function<TreeReader(const BlobId&)>;

// The next node of f, or false at its end; a tree malformed part way is the
// visitor's to excuse (unreadable) from there on, as one unreadable at the start.
bool next_node(Frame& f, const std::string& path, const std::string& sid, TreeVisitor& v, bool root) {
  try {
    return f.reader.next(f.node);
  } catch (const Error& e) {
    if (root) throw Error(e.code(), "snapshot '" + sid + "': its root tree cannot be read: " + e.what() + " (run 'cairnctl repo check')");
    if (!v.unreadable(path, e.what()))
      throw Error(e.code(),
                  "snapshot '" + sid + "': the listing of '" + path + "' cannot be read: " + e.what() + " (run 'cairnctl repo check')");
    return false;
  }
}

void walk_readers(const BlobId& root, const ReaderLoader& load, const std::string& snapshot_id, TreeVisitor& v, const WalkLimits& limits);

}  // namespace

void walk_snapshot(Repository& r, const Snapshot& s, TreeVisitor& v, const WalkLimits& limits) {
  walk_readers(
      s.tree, [&r](const BlobId& id) { return r.open_tree(id); }, s.id, v, limits);
}

void walk_tree(const BlobId& root, const TreeLoader& load, const std::string& snapshot_id, TreeVisitor& v, const WalkLimits& limits) {
  walk_readers(
      root, [&load](const BlobId& id) { return TreeReader(load(id)); }, snapshot_id, v, limits);
}

namespace {

void walk_readers(const BlobId& root, const ReaderLoader& load, const std::string& snapshot_id, TreeVisitor& v, const WalkLimits& limits) {
  const std::string sid = snapshot_id.substr(0, 8);
  std::vector<Frame> stack;
  stack.emplace_back();
  try {
    stack.back().reader = load(root);
  } catch (const Error& e) {
    throw Error(e.code(), "snapshot '" + sid + "': its root tree cannot be read: " + e.what() + " (run 'cairnctl repo check')");
  }
  std::string path;
  uint64_t entries = 0;
  while (!stack.empty()) {
    Frame& f = stack.back();
    if (!next_node(f, path, sid, v, stack.size() == 1)) {
      size_t parent_len = f.parent_len;
      stack.pop_back();
      if (!stack.empty()) {
        Frame& p = stack.back();
        v.leave(path, p.node, stack.size());
      }
      path.resize(parent_len);
      continue;
    }
    Node& n = f.node;
    const size_t depth = stack.size();  // components of this node's path
    if (++entries > limits.max_entries) too_many(sid, "has more than " + std::to_string(limits.max_entries), limits);
    if (entries == kShapeCheckEntries && limits.whole_tree && limits.max_entries > kShapeCheckEntries) {
      // A large walk: count what the whole snapshot holds, reading each tree once,
      // so a tree bomb is refused now rather than after max_entries entries.
      TreeShapes shapes(TreeShapes::Lister([&load](const BlobId& id) -> std::optional<TreeListing> {
        try {
          TreeReader r = load(id);
          return list_tree(r);
        } catch (const Error&) {
          return std::nullopt;  // the walk names it when it gets there
        }
      }));
      TreeShape shape = shapes.of(root);
      if (shape.entries > limits.max_entries)
        too_many(sid, "describes " + (shape.entries == UINT64_MAX ? std::string("more than 2^64") : std::to_string(shape.entries)), limits);
    }
    const size_t len = path.size();
    path += '/';
    path += n.name;
    const bool dir = n.type == NodeType::dir;
    const std::optional<BlobId> sub = dir ? n.subtree : std::nullopt;
    if (!v.enter(path, n, depth) || !dir) {
      path.resize(len);
      continue;
    }
    if (sub && depth >= kMaxTreeDepth) {
      std::string why = too_deep_message(snapshot_id, path);
      if (!v.too_deep(path, why)) throw Error(Errc::corrupt, why);
    } else if (sub) {
      Frame next;
      next.parent_len = len;
      bool readable = true;
      try {
        next.reader = load(*sub);
      } catch (const Error& e) {
        if (!v.unreadable(path, e.what()))
          throw Error(e.code(),
                      "snapshot '" + sid + "': the listing of '" + path + "' cannot be read: " + e.what() + " (run 'cairnctl repo check')");
        readable = false;
      }
      if (readable) {
        // n is not used again before this frame is popped: leave() gets the
        // parent frame's node where it lies then.
        stack.push_back(std::move(next));
        continue;
      }
    }
    v.leave(path, n, depth);
    path.resize(len);
  }
}

}  // namespace

TreeListing list_tree(TreeReader& r) {
  TreeListing l;
  Node n;
  while (r.next(n)) {
    ++l.entries;
    if (n.type == NodeType::dir && n.subtree) l.subtrees.push_back(*n.subtree);
  }
  return l;
}

TreeShapes::TreeShapes(Loader load)
    : load_([load = std::move(load)](const BlobId& id) -> std::optional<TreeListing> {
        auto t = load(id);
        if (!t) return std::nullopt;
        TreeReader r(std::move(*t));
        return list_tree(r);
      }) {}

namespace {
uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }
}  // namespace

TreeShape TreeShapes::of(const BlobId& root) {
  if (auto it = shapes_.find(root); it != shapes_.end()) return it->second;
  struct Pending {
    BlobId id;
    std::vector<BlobId> subs;  // one per directory naming a subtree, repeats kept: each is walked
    size_t next = 0;
    TreeShape acc;
  };
  std::vector<Pending> stack;
  std::unordered_set<BlobId, BlobIdHash> on_stack;
  auto push = [&](const BlobId& id) {
    Pending p;
    p.id = id;
    p.acc.height = 1;
    if (auto l = load_(id)) {
      p.acc.entries = l->entries;
      p.subs = std::move(l->subtrees);
    }
    on_stack.insert(id);
    stack.push_back(std::move(p));
  };
  auto merge = [](TreeShape& into, const TreeShape& child) {
    into.entries = sat_add(into.entries, child.entries);
    into.height = std::max(into.height, child.height == UINT64_MAX ? UINT64_MAX : child.height + 1);
  };
  push(root);
  while (!stack.empty()) {
    Pending& p = stack.back();
    if (p.next < p.subs.size()) {
      BlobId c = p.subs[p.next++];
      if (auto it = shapes_.find(c); it != shapes_.end())
        merge(p.acc, it->second);
      else if (on_stack.count(c))
        merge(p.acc, TreeShape{UINT64_MAX, UINT64_MAX});  // a tree that contains itself
      else
        push(c);
      continue;
    }
    Pending done = std::move(p);
    stack.pop_back();
    on_stack.erase(done.id);
    shapes_[done.id] = done.acc;
    if (!stack.empty()) merge(stack.back().acc, done.acc);
  }
  return shapes_.at(root);
}

}  // namespace cairn::repo
