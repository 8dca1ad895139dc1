#include "common/repo/archiver.h"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "cairn/version.h"
#include "common/repo/memory.h"
#include "common/repo/walk.h"
#include "common/util/cpus.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "common/util/path_at.h"
#include "common/util/stack_thread.h"

namespace cairn::repo {

namespace {

using Clock = std::chrono::steady_clock;

int64_t ts_ns(const struct timespec& t) { return int64_t(t.tv_sec) * 1000000000 + t.tv_nsec; }

std::string user_name(uid_t uid) {
  static std::mutex mu;
  static std::map<uid_t, std::string> cache;
  std::lock_guard g(mu);
  auto it = cache.find(uid);
  if (it != cache.end()) return it->second;
  struct passwd pwd {
  }, *pw = nullptr;
  std::vector<char> buf(4096);                         // not on the stack: the walk's stack grows with the tree's depth
  getpwuid_r(uid, &pwd, buf.data(), buf.size(), &pw);  // the _r form: other threads look up names too
  return cache[uid] = pw ? pw->pw_name : "";
}
std::string group_name(gid_t gid) {
  static std::mutex mu;
  static std::map<gid_t, std::string> cache;
  std::lock_guard g(mu);
  auto it = cache.find(gid);
  if (it != cache.end()) return it->second;
  struct group grp {
  }, *gr = nullptr;
  std::vector<char> buf(4096);
  getgrgid_r(gid, &grp, buf.data(), buf.size(), &gr);
  return cache[gid] = gr ? gr->gr_name : "";
}

// Paths are used through path_at: a tree as deep as kMaxTreeDepth with long names
// has paths far longer than PATH_MAX.
DIR* open_dir(const std::string& path) {
  PathAt at = path_at(path.empty() ? "/" : path);
  int fd = ::openat(at.fd(), at.rest.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return nullptr;
  DIR* d = ::fdopendir(fd);
  if (!d) ::close(fd);
  return d;
}

int lstat_long(const std::string& path, struct stat* st) {
  PathAt at = path_at(path);
  return ::fstatat(at.fd(), at.rest.c_str(), st, AT_SYMLINK_NOFOLLOW);
}

void read_xattrs(const std::string& long_path, Node& n) {
  PathAt at = path_at(long_path);
  const std::string path = at.proc();
  thread_local std::vector<char> names(65536);  // not on the stack (see user_name), allocated once
  ssize_t len = llistxattr(path.c_str(), names.data(), names.size());
  if (len <= 0) return;
  for (ssize_t i = 0; i < len;) {
    std::string name(names.data() + i);
    i += ssize_t(name.size()) + 1;
    Bytes v(65536);
    ssize_t vl = lgetxattr(path.c_str(), name.c_str(), v.data(), v.size());
    if (vl < 0) continue;
    v.resize(size_t(vl));
    n.xattrs.emplace_back(name, std::move(v));
  }
  std::sort(n.xattrs.begin(), n.xattrs.end());
}

bool fill_node(const std::string& name, const struct stat& st, Node& n) {
  n.name = name;
  if (S_ISREG(st.st_mode))
    n.type = NodeType::file;
  else if (S_ISDIR(st.st_mode))
    n.type = NodeType::dir;
  else if (S_ISLNK(st.st_mode))
    n.type = NodeType::symlink;
  else if (S_ISCHR(st.st_mode))
    n.type = NodeType::chardev;
  else if (S_ISBLK(st.st_mode))
    n.type = NodeType::blockdev;
  else if (S_ISFIFO(st.st_mode))
    n.type = NodeType::fifo;
  else if (S_ISSOCK(st.st_mode))
    n.type = NodeType::socket;
  else
    return false;
  n.mode = st.st_mode & 07777;
  n.uid = st.st_uid;
  n.gid = st.st_gid;
  n.user = user_name(st.st_uid);
  n.group = group_name(st.st_gid);
  n.mtime_ns = ts_ns(st.st_mtim);
  // atime is not recorded: any reader of the source (including a verification
  // after the backup) changes it, which would make every tree differ from its
  // parent and defeat dedup of metadata. Restore sets atime to mtime.
  n.ctime_ns = ts_ns(st.st_ctim);
  n.inode = st.st_ino;
  n.device = st.st_dev;
  n.links = st.st_nlink;
  n.rdev = st.st_rdev;
  if (n.type == NodeType::file) n.size = uint64_t(st.st_size);
  return true;
}

size_t largest_chunk() {
  size_t m = 0;
  for (auto p : kAllProfiles) m = std::max<size_t>(m, profile_params(p).max_size);
  return m;
}

struct Dir;

// Sharing writes: files from this size on are claimed (Repository::claim).
constexpr uint64_t kClaimMinFile = 1u << 20;

struct FileState {
  std::string path;
  ChunkProfile profile = ChunkProfile::standard;
  std::mutex mu;
  std::vector<BlobId> content;
  std::vector<std::pair<uint64_t, uint64_t>> extents;
  bool sparse = false;
  std::atomic<int> pending{1};  // chunks in flight + the reader's own hold
  bool failed = false;
  std::string error;
  // Set when the file changed between its open and the end of its read: what was
  // read is recorded (size included), and the file is listed, making the snapshot partial.
  std::string changed;
  uint64_t size = 0;
  // Sharing writes: another writer is storing this content ahead of this one.
  std::atomic<bool> trailing{false};
  // Under mu: set once every chunk is stored; until then the directories holding a
  // node of this file (the first link and later hard links) wait in waiters.
  bool done = false;
  std::vector<Dir*> waiters;
};

struct Child {
  Node node;
  std::shared_ptr<FileState> fs;  // a file being read (or the first of its hard-link group)
  // Identical to the parent snapshot's node (for a dir: the whole subtree).
  bool same = false;
  bool waiting = false;              // a directory whose tree is not written yet
  uint64_t parent_pos = UINT64_MAX;  // its node's place in the parent's listing, when found in order
};

// A directory whose tree blob is not written yet. It holds one count for the walker
// (released once its listing is walked) and one for every child still being
// stored: files being read, hard links waiting for their first link, and
// subdirectories whose trees are not written. At zero its tree is finished and
// saved at once, its id handed to the parent, and the directory freed.
//
// Children come in name order (the walk's), so each is written into the tree's
// text as soon as it and every child before it are final, and freed: a
// directory holds its text and the children still being stored, not a node per
// entry. Text past kTreeSpill goes on to a BlobStream (hashed and compressed
// as it comes). Children identical to the parent snapshot's, in the same
// places, are only counted while all are (lazy): an unchanged directory
// writes nothing and reuses its parent's tree; one that turns out to differ
// writes that prefix from the parent's tree, read again, first.
struct Dir {
  Dir* parent = nullptr;
  size_t slot = 0;             // this directory's node in parent->children (a slot number: see first)
  std::mutex mu;               // children: a subdirectory finishing on another thread writes its subtree id
  std::deque<Child> children;  // not written yet; children[0] is slot `first`
  size_t first = 0;
  TreeWriter text;
  std::unique_ptr<Repository::BlobStream> stream;
  uint64_t added = 0;    // children added, failed files included
  bool all_same = true;  // every child written (or counted) was the parent's
  bool in_order = true;  // false when sharing writes: children are sorted at the end
  bool lazy = false;     // the children so far are the parent's first same_prefix nodes, not written
  uint64_t same_prefix = 0;
  std::optional<BlobId> parent_tree;  // the parent snapshot's tree of this directory
  std::atomic<int> pending{1};
  // Identical to the parent snapshot's subtree, which is reused without encoding it again.
  std::optional<BlobId> reuse_subtree;
  Child& at(size_t s) { return children[s - first]; }
};

// A tree's text is held up to this much before it goes on to a BlobStream.
constexpr size_t kTreeSpill = 1u << 20;

// Everything a tree records about a node except its content and subtree.
bool same_metadata(const Node& a, const Node& b) {
  return a.type == b.type && a.mode == b.mode && a.uid == b.uid && a.gid == b.gid && a.user == b.user && a.group == b.group &&
         a.mtime_ns == b.mtime_ns && a.ctime_ns == b.ctime_ns && a.inode == b.inode && a.device == b.device && a.links == b.links &&
         a.size == b.size && a.rdev == b.rdev && a.target == b.target && a.xattrs == b.xattrs;
}

// Readers read into blocks and cut chunks in place; a worker gets a slice of the
// block (no copy) and the block goes back to the pool once its last chunk is
// stored. Blocks are reused whole, so their pages are faulted in once per backup.
class BlockPool : public std::enable_shared_from_this<BlockPool> {
 public:
  BlockPool(size_t block_size, size_t keep) : size_(block_size), keep_(keep) {}
  ~BlockPool() {
    for (uint8_t* p : spare_) delete[] p;
  }
  size_t block_size() const { return size_; }
  std::shared_ptr<uint8_t[]> take() {
    uint8_t* p = nullptr;
    {
      std::lock_guard g(mu_);
      if (!spare_.empty()) {
        p = spare_.back();
        spare_.pop_back();
      }
    }
    if (!p) p = new uint8_t[size_];  // never zero-filled: every byte handed out was read first
    return std::shared_ptr<uint8_t[]>(p, [self = shared_from_this()](uint8_t* q) { self->give(q); });
  }

 private:
  void give(uint8_t* p) {
    std::lock_guard g(mu_);
    if (spare_.size() < keep_)
      spare_.push_back(p);
    else
      delete[] p;
  }
  const size_t size_, keep_;
  std::mutex mu_;
  std::vector<uint8_t*> spare_;
};

// A reader's position in its current block, kept from file to file: small files
// share a block.
struct ReadBuffer {
  std::shared_ptr<uint8_t[]> block;
  size_t start = 0, end = 0;  // [start, end): read but not yet cut
};

struct Task {
  std::shared_ptr<FileState> fs;
  size_t seq;
  std::shared_ptr<uint8_t[]> block;  // keeps data valid
  std::span<const uint8_t> data;
};

// The walk's stack: room for kMaxTreeDepth levels of walk_dir and walk_entry (about
// 1 KiB each, several times that with sanitizers) with a wide margin.
constexpr size_t kWalkStackBytes = kMaxTreeDepth * (32u << 10);

// Files queued for the readers but not started: enough to keep every reader busy
// while the walk goes on, few enough that the walk never runs far ahead.
constexpr size_t kJobWindow = 64;

// The parent snapshot's listing of one directory, read as the walk asks for
// names rather than decoded whole: it holds the tree's text, and one node. The
// walk asks in name order (files and directories sorted; when sharing writes,
// the files sorted, then the directories in an order of their own), so most
// lookups move the reader forward; a directory it passes without being asked
// for is kept for a lookup that comes back to it. A tree that turns out
// malformed part way ends the listing there: what it did not list is read
// again, which is all an unreadable parent costs.
class ParentListing {
 public:
  explicit ParentListing(TreeReader r) : reader_(std::move(r)) {}
  // The node of that name, valid until the next call; null when there is none.
  // pos: its place in the listing, or UINT64_MAX when it was passed before.
  const Node* find(const std::string& name, uint64_t* pos = nullptr) {
    if (pos) *pos = UINT64_MAX;
    if (have_ && cur_.name == name) {
      if (pos) *pos = reader_.count() - 1;
      return &cur_;
    }
    if (have_ && name < cur_.name) {
      auto it = passed_.find(name);
      return it == passed_.end() ? nullptr : &it->second;
    }
    Node n;
    while (read(n)) {
      if (have_ && !asked_ && cur_.type == NodeType::dir) passed_.emplace(cur_.name, std::move(cur_));
      cur_ = std::move(n);
      have_ = true;
      asked_ = cur_.name == name;
      if (cur_.name >= name) {
        if (asked_ && pos) *pos = reader_.count() - 1;
        return asked_ ? &cur_ : nullptr;
      }
    }
    return nullptr;
  }
  // How many entries the listing has (reads the rest); UINT64_MAX when it is malformed.
  uint64_t entries() {
    Node n;
    while (read(n)) {
    }
    return broken_ ? UINT64_MAX : reader_.count();
  }

 private:
  bool read(Node& n) {
    if (broken_) return false;
    try {
      return reader_.next(n);
    } catch (const Error&) {
      broken_ = true;
      return false;
    }
  }
  TreeReader reader_;
  Node cur_;
  bool have_ = false, asked_ = false, broken_ = false;
  std::map<std::string, Node> passed_;  // directories passed without being asked for
};

class Backup {
 public:
  Backup(Repository& repo, const BackupOptions& opt) : repo_(repo), opt_(opt) {}
  ~Backup() {
    for (Dir* d : live_) delete d;
  }
  BackupResult run();

 private:
  // Sets parent_root_ and snap.parent, or res_.parent_note when a named parent is not used.
  void load_parent(Snapshot& snap);
  // --- walk (main thread): depth-first, each listing sorted by name
  // depth: components of dpath / path ('/a/b' is 2); see kMaxTreeDepth
  void walk_dir(Dir& dir, const std::string& dpath, ParentListing* ptree, bool restricted, size_t depth);
  void walk_entry(Dir& parent, const std::string& name, const std::string& path, ParentListing* ptree, bool restricted, size_t depth);
  std::unique_ptr<ParentListing> parent_subtree(ParentListing* ptree, const std::string& name);
  bool excluded(const std::string& path, const std::string& name) const;
  bool is_source(const std::string& path) const { return sources_.count(path) != 0; }
  // Where a path of the snapshot is read from (BackupOptions::path_map).
  std::string real(const std::string& path) const;
  bool leads_to_source(const std::string& path) const;
  std::vector<std::string> source_steps(const std::string& dpath) const;
  void error(const std::string& path, const std::string& reason);
  size_t add_child(Dir& parent, Child c);
  Dir* new_dir(Dir* parent, size_t slot);
  // Lazy from the start when the parent snapshot has this directory's tree.
  void start_lazy(Dir& d, const ParentListing* listing, const std::optional<BlobId>& tree) {
    if (listing && tree && d.in_order) {
      d.lazy = true;
      d.parent_tree = tree;
    }
  }
  static bool ready(Child& c);
  void write_ready(Dir& d);
  void write_child(Dir& d, Child& c);
  void write_prefix(Dir& d);
  void write_node(Dir& d, const Node& n);
  void push_job(std::shared_ptr<FileState> fs);
  // --- totals: an lstat-only count running beside the walk, as restic does
  void count_dir(const std::string& dpath, bool restricted, size_t depth);
  // --- read and store
  void reader_loop();
  void read_file(ReadBuffer& rb, const std::shared_ptr<FileState>& fs);
  uint64_t read_range(ReadBuffer& rb, int fd, const std::shared_ptr<FileState>& fs, uint64_t off, uint64_t len, const Chunker& ch,
                      size_t& seq);
  void submit(Task t);
  void worker_loop();
  void finish_chunk(FileState& fs);
  void file_done(FileState& fs);
  void fail(std::exception_ptr e);
  // --- trees
  void release(Dir* d);
  BlobId write_tree(Dir& d);
  Progress snapshot_progress();
  // The ticker thread and the main thread both report; callers get one call at a time.
  void report() {
    if (!opt_.progress) return;
    Progress p = snapshot_progress();
    std::lock_guard g(report_mu_);
    opt_.progress(p);
  }
  std::mutex report_mu_;
  void check_cancel() const {
    if (opt_.cancel && opt_.cancel->load()) throw Error(Errc::interrupted, "backup interrupted; nothing was recorded as a snapshot");
  }

  Repository& repo_;
  const BackupOptions& opt_;
  BackupResult res_;
  bool stream_ = false;            // stdin: read(), not pread()
  std::set<std::string> sources_;  // absolute, normalized; "" is the root
  std::unique_ptr<ParentListing> parent_root_;
  std::optional<BlobId> parent_root_tree_;
  std::map<std::pair<uint64_t, uint64_t>, std::shared_ptr<FileState>> hardlinks_;
  std::mutex err_mu_;
  std::vector<SnapshotError> errors_;

  std::mutex live_mu_;
  std::set<Dir*> live_;  // freed by the destructor if the backup fails midway
  Dir* root_ = nullptr;
  std::optional<BlobId> root_tree_;

  std::mutex jobs_mu_;
  std::condition_variable jobs_not_full_, jobs_not_empty_;
  std::deque<std::shared_ptr<FileState>> jobs_;
  bool walk_done_ = false;  // under jobs_mu_: no more jobs

  std::mutex qmu_;
  std::condition_variable q_not_full_, q_not_empty_;
  std::deque<Task> queue_;
  size_t queued_bytes_ = 0;
  size_t queue_cap_ = 8u << 20;  // two largest chunks, eight average ones: enough to keep the workers fed
  // Room for two of the largest chunks ahead of the cut point, so the unread rest is
  // copied to a fresh block at most once per largest chunk cut. Spare blocks: what a
  // full queue and the workers can hold on to besides the readers' own.
  // Made in run(), with a spare for each of at most four threads.
  std::shared_ptr<BlockPool> blocks_;
  bool readers_done_ = false;
  std::exception_ptr fatal_;
  std::atomic<bool> abort_{false};

  std::atomic<uint64_t> files_done_{0}, bytes_done_{0};
  std::atomic<uint64_t> changed_during_{0};              // files that changed while they were read
  std::atomic<uint64_t> walk_files_{0}, walk_bytes_{0};  // found by the walk so far
  std::atomic<uint64_t> count_files_{0}, count_bytes_{0};
  std::atomic<bool> walked_{false}, counted_{false};
  std::mutex cur_mu_;
  std::string current_;
  std::string phase_ = "backup";
  Clock::time_point start_ = Clock::now();
};

std::string Backup::real(const std::string& path) const {
  for (const auto& [as, from] : opt_.path_map) {
    if (path == as) return from;
    if (path.size() > as.size() && path.compare(0, as.size(), as) == 0 && path[as.size()] == '/') return from + path.substr(as.size());
  }
  return path;
}

bool Backup::excluded(const std::string& path, const std::string& name) const {
  for (const auto& g : opt_.excludes)
    if (fnmatch(g.c_str(), path.c_str(), 0) == 0 || fnmatch(g.c_str(), name.c_str(), 0) == 0) return true;
  return false;
}

bool Backup::leads_to_source(const std::string& path) const {
  std::string pre = path + "/";
  auto it = sources_.lower_bound(pre);
  return it != sources_.end() && it->compare(0, pre.size(), pre) == 0;
}

// The names below dpath on the way to a source, sorted.
std::vector<std::string> Backup::source_steps(const std::string& dpath) const {
  std::string pre = dpath + "/";
  std::set<std::string> names;
  for (auto it = sources_.lower_bound(pre); it != sources_.end() && it->compare(0, pre.size(), pre) == 0; ++it)
    names.insert(it->substr(pre.size(), it->find('/', pre.size()) - pre.size()));
  return {names.begin(), names.end()};
}

void Backup::error(const std::string& path, const std::string& reason) {
  // A database's base backup: its log repairs what changed or vanished while
  // the files were read (BackupOptions::changes_repaired).
  if (opt_.changes_repaired && (reason.rfind(kChangedWhileRead, 0) == 0 || reason.rfind("vanished before it could be read", 0) == 0))
    return;
  std::lock_guard g(err_mu_);
  errors_.push_back({path, reason});
}

std::unique_ptr<ParentListing> Backup::parent_subtree(ParentListing* ptree, const std::string& name) {
  const Node* n = ptree ? ptree->find(name) : nullptr;
  if (!n || n->type != NodeType::dir || !n->subtree) return nullptr;
  try {
    return std::make_unique<ParentListing>(repo_.open_tree(*n->subtree));
  } catch (const Error&) {
    return nullptr;  // an unreadable parent only costs re-reading
  }
}

static const Node* find_node(ParentListing* t, const std::string& name, uint64_t* pos) {
  if (pos) *pos = UINT64_MAX;
  return t ? t->find(name, pos) : nullptr;
}

size_t Backup::add_child(Dir& parent, Child c) {
  std::lock_guard g(parent.mu);
  parent.children.push_back(std::move(c));
  ++parent.added;
  size_t slot = parent.first + parent.children.size() - 1;
  write_ready(parent);
  return slot;
}

bool Backup::ready(Child& c) {
  if (c.waiting) return false;
  if (!c.fs) return true;
  std::lock_guard g(c.fs->mu);
  return c.fs->done;
}

// Caller holds d.mu.
void Backup::write_ready(Dir& d) {
  if (!d.in_order) return;
  while (!d.children.empty() && ready(d.children.front())) {
    write_child(d, d.children.front());
    d.children.pop_front();
    ++d.first;
  }
}

void Backup::write_child(Dir& d, Child& c) {
  Node& n = c.node;
  d.all_same = d.all_same && c.same;
  if (n.type == NodeType::file && c.fs) {
    FileState& fs = *c.fs;
    std::lock_guard fg(fs.mu);
    if (fs.failed) return;  // listed in errors; the snapshot is partial
    n.content = fs.content;
    n.sparse = fs.sparse;
    n.extents = fs.extents;
    n.size = fs.size;
  }
  if (d.lazy && c.same && c.parent_pos == d.same_prefix) {
    ++d.same_prefix;
    return;
  }
  write_prefix(d);
  write_node(d, n);
}

// The lazy prefix, from the parent's tree: its first same_prefix nodes are
// what those children would have written (atime is never recorded).
void Backup::write_prefix(Dir& d) {
  if (!d.lazy) return;
  d.lazy = false;
  if (d.same_prefix == 0) return;
  TreeReader r = repo_.open_tree(*d.parent_tree);
  Node n;
  for (uint64_t i = 0; i < d.same_prefix; ++i) {
    if (!r.next(n)) throw Error(Errc::corrupt, "backup: the parent's tree " + id_hex(*d.parent_tree) + " reads shorter the second time");
    n.atime_ns = 0;
    write_node(d, n);
  }
}

void Backup::write_node(Dir& d, const Node& n) {
  d.text.add(n);
  if (d.text.size() < kTreeSpill) return;
  if (!d.stream) d.stream = repo_.blob_stream(BlobType::tree);
  std::string piece = d.text.take();
  d.stream->add(as_bytes(piece));
}

Dir* Backup::new_dir(Dir* parent, size_t slot) {
  auto d = std::make_unique<Dir>();
  d->parent = parent;
  d->slot = slot;
  d->in_order = !(opt_.walk_start > 0 && opt_.walk_start < 1);
  if (parent) parent->pending++;
  std::lock_guard g(live_mu_);
  live_.insert(d.get());
  return d.release();
}

// restricted: only the way to the sources below dpath (the directories above a
// source, and excluded directories holding one), not the whole listing.
void Backup::walk_dir(Dir& dir, const std::string& dpath, ParentListing* ptree, bool restricted, size_t depth) {
  if (restricted) {
    for (const auto& n : source_steps(dpath)) {
      check_cancel();
      walk_entry(dir, n, dpath + "/" + n, ptree, !is_source(dpath + "/" + n), depth + 1);
    }
    return;
  }
  DIR* d = open_dir(real(dpath));
  if (!d) {
    error(dpath.empty() ? "/" : dpath, std::string("cannot list directory: ") + strerror(errno));
    return;
  }
  std::vector<std::string> names, subdirs;
  while (auto* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    // Sharing writes: directories (a topic's partitions) are read in an order of their own, below.
    if (opt_.walk_start > 0 && opt_.walk_start < 1 && e->d_type == DT_DIR)
      subdirs.push_back(std::move(n));
    else
      names.push_back(std::move(n));
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  if (!subdirs.empty()) {
    // Every writer orders the subdirectories alike, by a hash of their names
    // (similar names spread out), and starts at its own place in that list,
    // wrapping around; files come first. The tree is stored sorted either way.
    auto h = [](const std::string& n) {
      uint64_t x = 1469598103934665603ULL;
      for (unsigned char c : n) x = (x ^ c) * 1099511628211ULL;
      return x;
    };
    std::sort(subdirs.begin(), subdirs.end(), [&](const std::string& a, const std::string& b) {
      uint64_t ha = h(a), hb = h(b);
      return ha != hb ? ha < hb : a < b;
    });
    std::rotate(subdirs.begin(), subdirs.begin() + ptrdiff_t(double(subdirs.size()) * opt_.walk_start) % ptrdiff_t(subdirs.size()),
                subdirs.end());
    for (auto& n : subdirs) names.push_back(std::move(n));
  }
  for (const auto& n : names) {
    check_cancel();
    if (abort_) throw Error(Errc::interrupted, "aborted");
    std::string p = dpath + "/" + n;
    if (excluded(p, n) && !is_source(p)) {
      if (leads_to_source(p)) walk_entry(dir, n, p, ptree, true, depth + 1);
      continue;
    }
    walk_entry(dir, n, p, ptree, false, depth + 1);
  }
}

void Backup::push_job(std::shared_ptr<FileState> fs) {
  std::unique_lock lk(jobs_mu_);
  jobs_not_full_.wait(lk, [&] { return jobs_.size() < kJobWindow || abort_.load(); });
  if (abort_) throw Error(Errc::interrupted, "aborted");
  jobs_.push_back(std::move(fs));
  jobs_not_empty_.notify_one();
}

void Backup::walk_entry(Dir& parent, const std::string& name, const std::string& path, ParentListing* ptree, bool restricted,
                        size_t depth) {
  struct stat st {};
  if (lstat_long(real(path), &st) != 0) {
    error(path,
          std::string(errno == ENOENT ? "vanished before it could be read" : "cannot stat: ") + (errno == ENOENT ? "" : strerror(errno)));
    return;
  }
  Child c;
  Node& n = c.node;
  if (!fill_node(name, st, n)) return;
  if (n.type == NodeType::dir && depth >= kMaxTreeDepth) {
    // The one depth limit of every reader: what lies below is not backed up, the
    // directory is recorded empty, and the snapshot is partial.
    read_xattrs(real(path), n);
    error(path, "its contents lie deeper than " + std::to_string(kMaxTreeDepth) +
                    " levels, the limit of every cairn command (docs/repository-format.md): the directory is recorded empty; "
                    "back up what lies below it as a source of its own");
    add_child(parent, std::move(c));
    return;
  }
  if (restricted) {
    // A directory on the way to a source keeps its own metadata; its tree holds only that way.
    if (n.type != NodeType::dir) {
      error(path, "cannot back up what lies below it: not a directory");
      return;
    }
    read_xattrs(real(path), n);
    c.waiting = true;
    size_t slot = add_child(parent, std::move(c));
    Dir* d = new_dir(&parent, slot);
    auto sub = parent_subtree(ptree, name);
    // On a throw the walker's holds stay: nothing above is written, the backup fails.
    walk_dir(*d, path, sub.get(), true, depth);
    sub.reset();
    release(d);
    return;
  }
  read_xattrs(real(path), n);
  const Node* pn = find_node(ptree, name, &c.parent_pos);
  if (n.type == NodeType::dir) {
    ++res_.dirs;
    Node meta = n;
    c.waiting = true;
    size_t slot = add_child(parent, std::move(c));
    Dir* d = new_dir(&parent, slot);
    auto sub = parent_subtree(ptree, name);
    start_lazy(*d, sub.get(), pn ? pn->subtree : std::nullopt);
    walk_dir(*d, path, sub.get(), false, depth);
    bool same = false;
    if (sub && pn && !opt_.force && same_metadata(meta, *pn) && pn->subtree && repo_.index().contains(*pn->subtree)) {
      uint64_t entries = sub->entries();
      std::lock_guard g(d->mu);
      same =
          d->added == entries && d->all_same && std::all_of(d->children.begin(), d->children.end(), [](const Child& x) { return x.same; });
    }
    sub.reset();  // the parent's listing goes before this directory's tree is written
    if (same) {
      d->reuse_subtree = pn->subtree;
      std::lock_guard g(parent.mu);
      parent.at(slot).same = true;
    }
    release(d);  // the walker's hold: the tree is written now or when its last file is stored
    return;
  }
  if (n.type == NodeType::symlink) {
    std::string buf(4096, '\0');
    PathAt at = path_at(real(path));
    ssize_t l = ::readlinkat(at.fd(), at.rest.c_str(), buf.data(), buf.size());
    if (l < 0) {
      error(path, std::string("cannot read link: ") + strerror(errno));
      return;
    }
    buf.resize(size_t(l));
    n.target = buf;
    c.same = pn && same_metadata(n, *pn);
    add_child(parent, std::move(c));
    return;
  }
  if (n.type != NodeType::file) {
    c.same = pn && same_metadata(n, *pn);
    add_child(parent, std::move(c));
    return;
  }
  ++walk_files_;
  walk_bytes_ += n.size;
  bool unchanged = pn && !opt_.force && pn->type == NodeType::file && pn->inode == n.inode && pn->size == n.size &&
                   pn->mtime_ns == n.mtime_ns && (opt_.ignore_ctime || pn->ctime_ns == n.ctime_ns) &&
                   std::all_of(pn->content.begin(), pn->content.end(), [&](const BlobId& id) { return repo_.index().contains(id); });
  if (unchanged) {
    n.content = pn->content;
    n.extents = pn->extents;
    n.sparse = pn->sparse;
    c.same = same_metadata(n, *pn);
    ++res_.files_unmodified;
    ++files_done_;
    bytes_done_ += n.size;
    add_child(parent, std::move(c));
    return;
  }
  (pn ? res_.files_changed : res_.files_new)++;
  auto key = std::make_pair(uint64_t(st.st_dev), uint64_t(st.st_ino));
  if (st.st_nlink > 1) {
    auto it = hardlinks_.find(key);
    if (it != hardlinks_.end()) {
      // A later link: its content is the first link's. Its directory waits for that file.
      c.fs = it->second;
      ++files_done_;
      bytes_done_ += n.size;
      {
        std::lock_guard g(c.fs->mu);
        if (!c.fs->done) {
          parent.pending++;
          c.fs->waiters.push_back(&parent);
        }
      }
      add_child(parent, std::move(c));
      return;
    }
  }
  auto fs = std::make_shared<FileState>();
  fs->path = path;
  fs->size = n.size;
  fs->profile = opt_.profile ? *opt_.profile : choose_profile(name, n.size);
  if (!opt_.profile && n.size >= (64u << 10))
    for (const auto& d : opt_.page_dirs)
      if (path.size() > d.size() && path.compare(0, d.size(), d) == 0 && path[d.size()] == '/') fs->profile = ChunkProfile::relation;
  fs->waiters.push_back(&parent);
  parent.pending++;
  c.fs = fs;
  if (st.st_nlink > 1) hardlinks_[key] = fs;
  add_child(parent, std::move(c));
  push_job(std::move(fs));
}

void Backup::count_dir(const std::string& dpath, bool restricted, size_t depth) {
  std::vector<std::string> names;
  if (depth >= kMaxTreeDepth) return;  // the walk does not go below either
  if (restricted) {
    names = source_steps(dpath);
  } else {
    DIR* d = open_dir(real(dpath));
    if (!d) return;
    while (auto* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(std::move(n));
    }
    ::closedir(d);
  }
  for (const auto& n : names) {
    if (walked_ || abort_) return;
    std::string p = dpath + "/" + n;
    bool r = restricted ? !is_source(p) : false;
    if (!restricted && excluded(p, n) && !is_source(p)) {
      if (!leads_to_source(p)) continue;
      r = true;
    }
    struct stat st {};
    if (lstat_long(real(p), &st) != 0) continue;
    if (r) {
      if (S_ISDIR(st.st_mode)) count_dir(p, true, depth + 1);
    } else if (S_ISREG(st.st_mode)) {
      ++count_files_;
      count_bytes_ += uint64_t(st.st_size);
    } else if (S_ISDIR(st.st_mode)) {
      count_dir(p, false, depth + 1);
    }
  }
}

void Backup::submit(Task t) {
  std::unique_lock lk(qmu_);
  // A reader that finds the queue full waits until it is half empty and then adds
  // several chunks: waking it for every chunk taken cost a context switch per chunk.
  if (queued_bytes_ >= queue_cap_) q_not_full_.wait(lk, [&] { return queued_bytes_ <= queue_cap_ / 2 || queue_.empty() || abort_.load(); });
  if (abort_) throw Error(Errc::interrupted, "aborted");
  queued_bytes_ += t.data.size();
  queue_.push_back(std::move(t));
  q_not_empty_.notify_one();
}

uint64_t Backup::read_range(ReadBuffer& rb, int fd, const std::shared_ptr<FileState>& fs, uint64_t off, uint64_t len, const Chunker& ch,
                            size_t& seq) {
  const size_t maxc = ch.params().max_size;
  const size_t cap = blocks_->block_size();  // at least twice maxc
  ch.restart();                              // a sparse file's extents do not follow one another
  uint64_t remaining = len;
  bool eof = false;
  while (true) {
    if (abort_) throw Error(Errc::interrupted, "aborted");
    while (!eof && rb.end - rb.start < maxc) {
      if (!rb.block || cap - rb.end < maxc) {
        // No room for the chunker's look-ahead: go on in a fresh block, taking the
        // unread rest along. Chunks already cut keep the old block alive.
        auto next = blocks_->take();
        if (rb.end > rb.start) std::memcpy(next.get(), rb.block.get() + rb.start, rb.end - rb.start);
        rb.end -= rb.start;
        rb.start = 0;
        rb.block = std::move(next);
      }
      size_t want = std::min<uint64_t>(cap - rb.end, remaining);
      if (want == 0) {
        eof = true;
        break;
      }
      ssize_t r = stream_ ? ::read(fd, rb.block.get() + rb.end, want) : ::pread(fd, rb.block.get() + rb.end, want, off_t(off));
      if (r < 0) {
        if (errno == EINTR) continue;
        throw_errno("cannot read", fs->path, errno);
      }
      if (r == 0) {
        eof = true;
        break;
      }
      rb.end += size_t(r);
      off += uint64_t(r);
      if (stream_) {
        fs->size += uint64_t(r);
        walk_bytes_ += uint64_t(r);  // a stream's size is known only as it is read (issue 32: etcd counted 0 bytes)
      }
      remaining -= uint64_t(r);
    }
    if (rb.end == rb.start) break;
    size_t n = ch.cut(rb.block.get() + rb.start, rb.end - rb.start);
    // Sharing writes: a large file is claimed by its first chunk; when
    // another writer claimed the same content, this one follows it (§ 13.1).
    if (opt_.share_writes && seq == 0 && fs->size >= kClaimMinFile && fs->profile != ChunkProfile::kafka &&
        !repo_.claim(repo_.blob_id(std::span<const uint8_t>(rb.block.get() + rb.start, n))))
      fs->trailing = true;
    Task t{fs, seq++, rb.block, std::span<const uint8_t>(rb.block.get() + rb.start, n)};
    {
      std::lock_guard g(fs->mu);
      fs->content.emplace_back();
    }
    fs->pending++;
    submit(std::move(t));
    rb.start += n;
  }
  return len - remaining;
}

void Backup::read_file(ReadBuffer& rb, const std::shared_ptr<FileState>& fs) {
  {
    std::lock_guard g(cur_mu_);
    current_ = fs->path;
  }
  if (stream_) {
    Chunker ch(repo_.gear(), profile_params(fs->profile));
    size_t seq = 0;
    read_range(rb, opt_.stdin_fd, fs, 0, UINT64_MAX, ch, seq);
    return;
  }
  PathAt at = path_at(real(fs->path));
  int fd = ::openat(at.fd(), at.rest.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOATIME);
  if (fd < 0 && errno == EPERM) fd = ::openat(at.fd(), at.rest.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    fs->failed = true;
    fs->error = errno == ENOENT ? "vanished before it could be read" : std::string("cannot open: ") + strerror(errno);
    return;
  }
  Fd guard(fd);
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    fs->failed = true;
    fs->error = "is no longer a regular file";
    return;
  }
  Chunker ch(repo_.gear(), profile_params(fs->profile));
  size_t seq = 0;
  try {
    uint64_t size = uint64_t(st.st_size);
    bool sparse = uint64_t(st.st_blocks) * 512 < size;
    std::vector<std::pair<uint64_t, uint64_t>> ext;
    if (sparse) {
      off_t pos = 0;
      while (pos < off_t(size)) {
        off_t data = ::lseek(fd, pos, SEEK_DATA);
        if (data < 0) break;  // ENXIO: only a hole remains
        off_t hole = ::lseek(fd, data, SEEK_HOLE);
        if (hole < 0) hole = off_t(size);
        ext.emplace_back(uint64_t(data), uint64_t(hole - data));
        pos = hole;
      }
    }
    // The snapshot records what was read: a file that grows or shrinks meanwhile
    // gets the size of the bytes stored, never its size at open.
    bool short_read = false;
    if (sparse) {
      fs->sparse = true;
      for (auto [o, l] : ext) {
        uint64_t got = read_range(rb, fd, fs, o, l, ch, seq);
        if (got) fs->extents.emplace_back(o, got);
        short_read |= got != l;
      }
      // holes count as done
      uint64_t data_bytes = 0;
      for (auto [o, l] : ext) data_bytes += l;
      if (size > data_bytes) bytes_done_ += size - data_bytes;
      fs->size = size;
    } else {
      fs->size = read_range(rb, fd, fs, 0, UINT64_MAX, ch, seq);
    }
    // Torn when its size or modification time moved between open and end of read.
    struct stat end {};
    if (fstat(fd, &end) == 0 && (short_read || uint64_t(end.st_size) != size || fs->size != size ||
                                 end.st_mtim.tv_sec != st.st_mtim.tv_sec || end.st_mtim.tv_nsec != st.st_mtim.tv_nsec)) {
      std::lock_guard g(fs->mu);
      fs->changed = std::string(kChangedWhileRead) + " (" + std::to_string(size) + " bytes at open, " + std::to_string(end.st_size) +
                    " at the end" +
                    (end.st_mtim.tv_sec != st.st_mtim.tv_sec || end.st_mtim.tv_nsec != st.st_mtim.tv_nsec ? ", modified meanwhile" : "") +
                    "): the " + std::to_string(fs->size) +
                    " bytes read are recorded but may mix old and new content; back it up again when it is not being written";
    }
  } catch (const Error& e) {
    if (abort_) throw;
    std::lock_guard g(fs->mu);
    fs->failed = true;
    fs->error = e.what();
  }
}

void Backup::fail(std::exception_ptr e) {
  {
    std::lock_guard g(qmu_);
    if (!fatal_) fatal_ = e;
    abort_ = true;
    q_not_empty_.notify_all();
    q_not_full_.notify_all();
  }
  std::lock_guard g(jobs_mu_);
  jobs_not_empty_.notify_all();
  jobs_not_full_.notify_all();
}

void Backup::reader_loop() {
  ReadBuffer rb;
  try {
    for (;;) {
      std::shared_ptr<FileState> fs;
      {
        std::unique_lock lk(jobs_mu_);
        jobs_not_empty_.wait(lk, [&] { return !jobs_.empty() || walk_done_ || abort_.load(); });
        if (abort_ || jobs_.empty()) break;
        fs = std::move(jobs_.front());
        jobs_.pop_front();
        jobs_not_full_.notify_one();
      }
      read_file(rb, fs);
      rb.start = rb.end;  // a file that failed midway leaves no look-ahead for the next
      finish_chunk(*fs);  // the reader's hold
    }
  } catch (...) {
    fail(std::current_exception());
  }
}

void Backup::worker_loop() {
  for (;;) {
    Task t;
    {
      std::unique_lock lk(qmu_);
      q_not_empty_.wait(lk, [&] { return !queue_.empty() || readers_done_ || abort_; });
      if (abort_) return;
      if (queue_.empty()) return;
      t = std::move(queue_.front());
      queue_.pop_front();
      queued_bytes_ -= t.data.size();
      if (queued_bytes_ <= queue_cap_ / 2) q_not_full_.notify_all();
    }
    try {
      BlobId id = repo_.blob_id(t.data);
      if (opt_.share_writes) {
        // Another writer stores the same content (a replica) ahead of this
        // one: follow it, and store only what it has not stored within a
        // moment (it stopped, or the content differs from here on).
        if (repo_.stored_by_others(id)) {
          t.fs->trailing = true;
        } else if (t.fs->profile == ChunkProfile::kafka && !repo_.has_blob(id)) {
          // Replicas' segments begin at other offsets, so their files are
          // claimed chunk by chunk: a chunk another writer claimed is waited
          // for, whichever file it comes in.
          if (!repo_.claim(id)) repo_.wait_for_blob(id, std::chrono::milliseconds(1500), opt_.cancel);
        } else if (t.fs->trailing && !repo_.has_blob(id) && !repo_.wait_for_blob(id, std::chrono::milliseconds(1500), opt_.cancel)) {
          t.fs->trailing = false;
        }
      }
      repo_.save_blob_as(BlobType::data, t.data, id,
                         t.fs->profile == ChunkProfile::page || t.fs->profile == ChunkProfile::relation ? BlobHint::page : BlobHint::none);
      t.block.reset();  // the block may go back to the pool
      {
        std::lock_guard g(t.fs->mu);
        t.fs->content[t.seq] = id;
      }
      bytes_done_ += t.data.size();
      finish_chunk(*t.fs);
    } catch (...) {
      fail(std::current_exception());
      return;
    }
  }
}

void Backup::finish_chunk(FileState& fs) {
  if (--fs.pending == 0) file_done(fs);
}

void Backup::file_done(FileState& fs) {
  ++files_done_;
  // Sharing writes: what this file added is written and indexed now, where
  // the other writers look for it, not when the pack is full.
  if (opt_.share_writes && fs.size >= kClaimMinFile) repo_.publish_open_pack();
  if (fs.failed)
    error(fs.path, fs.error);  // whatever was read of it still counts toward the bytes seen
  else if (!fs.changed.empty()) {
    error(fs.path, fs.changed);
    ++changed_during_;
  }
  std::vector<Dir*> waiters;
  {
    std::lock_guard g(fs.mu);
    fs.done = true;
    waiters.swap(fs.waiters);
  }
  for (Dir* d : waiters) release(d);
}

// Drops one count of d (a child of it is final: into its text); the last one
// writes d's tree and passes it up.
void Backup::release(Dir* d) {
  while (d) {
    {
      std::lock_guard g(d->mu);
      write_ready(*d);
    }
    if (--d->pending != 0) return;
    Dir* parent = d->parent;
    BlobId id = write_tree(*d);
    {
      std::lock_guard g(live_mu_);
      live_.erase(d);
    }
    size_t slot = d->slot;
    delete d;
    if (!parent) {
      root_tree_ = id;
      return;
    }
    {
      std::lock_guard g(parent->mu);
      Child& c = parent->at(slot);
      c.node.subtree = id;
      c.waiting = false;
    }
    d = parent;
  }
}

BlobId Backup::write_tree(Dir& d) {
  if (d.reuse_subtree) return *d.reuse_subtree;
  check_cancel();
  if (abort_) throw Error(Errc::interrupted, "aborted");
  std::lock_guard g(d.mu);
  if (!d.in_order) {
    // Sorted by name: identical directories give identical bytes, so their trees dedup.
    std::sort(d.children.begin(), d.children.end(), [](const Child& a, const Child& b) { return a.node.name < b.node.name; });
    d.in_order = true;
  }
  write_ready(d);  // every child is final: pending is zero
  if (!d.children.empty()) throw Error(Errc::io, "backup: a directory's tree was written before its children");
  write_prefix(d);
  std::string rest = d.text.finish();
  BlobId id;
  if (d.stream) {
    d.stream->add(as_bytes(rest));
    std::string().swap(rest);
    id = d.stream->finish();
    d.stream.reset();
  } else {
    repo_.save_blob(BlobType::tree, as_bytes(rest), id);
  }
  return id;
}

Progress Backup::snapshot_progress() {
  Progress p;
  {
    std::lock_guard g(cur_mu_);
    p.current = current_;
    p.phase = phase_;
  }
  p.files_done = files_done_;
  p.bytes_done = bytes_done_;
  // The walk and the reading overlap. Totals are final once the walk is done, or
  // once the lstat-only count beside it is; until then they only grow and no ETA
  // may be derived from them.
  p.files_total = walk_files_;
  p.bytes_total = walk_bytes_;
  p.totals_known = walked_;
  if (!walked_) {
    p.files_total = std::max<uint64_t>(p.files_total, count_files_);
    p.bytes_total = std::max<uint64_t>(p.bytes_total, count_bytes_);
    p.totals_known = counted_;
  }
  p.files_total = std::max(p.files_total, p.files_done);
  p.bytes_total = std::max(p.bytes_total, p.bytes_done);
  p.bytes_new = repo_.stats().bytes_raw_new;
  {
    std::lock_guard g(err_mu_);
    p.errors = errors_.size();
  }
  p.elapsed_s = std::chrono::duration<double>(Clock::now() - start_).count();
  return p;
}

// The parent's content is reused without reading it, so where it comes from is
// a matter of trust (BackupOptions::ParentRule, docs/repository-format.md).
void Backup::load_parent(Snapshot& snap) {
  const bool named_only = opt_.parent_rule == BackupOptions::ParentRule::named_only;
  std::string parent = opt_.parent;
  if (named_only) {
    if (!parent.empty() && !is_snapshot_id(parent)) {
      res_.parent_note = "the named parent is not a snapshot id; every file is read";
      return;
    }
  } else if (parent.empty() && !opt_.force) {
    std::string key = source_key(snap);
    for (const auto& s : load_snapshots(repo_))
      if (source_key(s) == key) parent = s.id;
  } else if (!parent.empty()) {
    parent = resolve_snapshot(repo_, parent);
  }
  if (parent.empty()) return;
  try {
    Snapshot ps = load_snapshot(repo_, parent);
    if (named_only) {
      std::vector<std::string> theirs = ps.paths, ours = snap.paths;
      std::sort(theirs.begin(), theirs.end());
      std::sort(ours.begin(), ours.end());
      if (theirs != ours) {
        res_.parent_note = "the named parent '" + parent.substr(0, 8) + "' holds other paths; every file is read";
        return;
      }
    }
    parent_root_ = std::make_unique<ParentListing>(repo_.open_tree(ps.tree));
    parent_root_tree_ = ps.tree;
    snap.parent = parent;
  } catch (const Error& e) {
    parent_root_.reset();  // fall back to reading everything
    if (named_only)
      res_.parent_note = "the named parent '" + parent.substr(0, 8) + "' cannot be read (" + e.what() + "); every file is read";
  }
}

BackupResult Backup::run() {
  ProgressTicker ticker(opt_.progress_interval, opt_.progress ? std::function<void()>([this] { report(); }) : nullptr);
  struct Sharing {
    Repository& r;
    explicit Sharing(Repository& repo, bool on) : r(repo) { r.share_writes(on); }
    ~Sharing() { r.share_writes(false); }
  } sharing(repo_, opt_.share_writes);

  Snapshot snap;
  snap.hostname = opt_.hostname.empty() ? hostname() : opt_.hostname;
  snap.username = username();
  snap.tags = opt_.tags;
  snap.program = std::string("cairn ") + CAIRN_VERSION;

  if (!opt_.stdin_name.empty()) {
    if (opt_.stdin_name.find('/') != std::string::npos || opt_.stdin_name == "." || opt_.stdin_name == "..")
      throw Error(Errc::invalid_input, "--stdin-name '" + opt_.stdin_name + "' must be a plain file name");
    snap.paths = {"stdin:" + opt_.stdin_name};
  } else {
    if (opt_.paths.empty()) throw Error(Errc::invalid_input, "nothing to back up: give at least one path");
    for (const auto& p : opt_.paths) snap.paths.push_back(std::filesystem::absolute(std::filesystem::path(p)).lexically_normal().string());
    std::sort(snap.paths.begin(), snap.paths.end());
    for (const auto& [as, from] : opt_.path_map)
      if (!std::binary_search(snap.paths.begin(), snap.paths.end(), as) || from.empty() || from[0] != '/')
        throw Error(Errc::invalid_input, "backup: the source mapping '" + as + "' -> '" + from +
                                             "' must map one of the sources, written as an absolute path without a trailing '/', "
                                             "to an absolute path");
    for (auto& p : snap.paths) {
      while (p.size() > 1 && p.back() == '/') p.pop_back();
      // Every source must exist before anything is read.
      struct stat st {};
      if (::lstat(real(p).c_str(), &st) != 0) throw_errno("cannot read source", real(p), errno);
      sources_.insert(p == "/" ? "" : p);
    }
    load_parent(snap);
  }

  root_ = new_dir(nullptr, 0);
  start_lazy(*root_, parent_root_.get(), parent_root_tree_);
  stream_ = !opt_.stdin_name.empty();
  // The threads get what the repository's index and trees leave of the budget (memory.h).
  uint64_t budget = budget_bytes(opt_.memory_budget);
  uint64_t repository = repository_needs(repo_.index(), MemoryUse::backup, 1).repository_bytes();
  unsigned cores =
      opt_.threads ? opt_.threads : backup_threads(budget > repository ? budget - repository : 0, usable_cpus(), repo_.params().pack_size);
  blocks_ = std::make_shared<BlockPool>(2 * largest_chunk(), std::min(4u, cores));
  unsigned nreaders = stream_ ? 1 : cores;
  std::vector<std::thread> workers, readers;
  for (unsigned i = 0; i < cores; ++i) workers.emplace_back([this] { worker_loop(); });
  for (unsigned i = 0; i < nreaders; ++i) readers.emplace_back([this] { reader_loop(); });
  // Cancellation watcher: turns a signal into an abort of the pipeline.
  std::atomic<bool> pipeline_done{false};
  std::thread watcher([&] {
    while (!pipeline_done) {
      if (opt_.cancel && opt_.cancel->load()) {
        fail(std::make_exception_ptr(Error(Errc::interrupted, "backup interrupted; nothing was recorded as a snapshot")));
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  std::thread counter;
  if (opt_.stdin_name.empty() && opt_.progress)
    counter = std::thread([this] {
      if (is_source(""))
        count_dir("", false, 0);
      else
        count_dir("", true, 0);
      if (!abort_) counted_ = true;
    });

  // The walk: depth-first on this thread, feeding the readers through a bounded
  // window; each directory's tree is written as soon as its last child is stored.
  try {
    if (!opt_.stdin_name.empty()) {
      auto fs = std::make_shared<FileState>();
      fs->path = "stdin:" + opt_.stdin_name;
      // By its name, as a file's (an etcd snapshot stream is a bbolt database: pages).
      fs->profile = opt_.profile ? *opt_.profile : choose_profile(opt_.stdin_name, UINT64_MAX);
      Child c;
      c.node.name = opt_.stdin_name;
      c.node.type = NodeType::file;
      c.node.mode = 0600;
      c.node.uid = getuid();
      c.node.gid = getgid();
      struct timespec now {};
      clock_gettime(CLOCK_REALTIME, &now);
      c.node.mtime_ns = c.node.ctime_ns = ts_ns(now);
      c.fs = fs;
      fs->waiters.push_back(root_);
      root_->pending++;
      add_child(*root_, std::move(c));
      walk_files_ = 1;
      ++res_.files_new;
      push_job(std::move(fs));
    } else {
      // The walk recurses once per directory level, at most kMaxTreeDepth levels
      // (deeper directories are recorded empty): its stack is sized for that, not
      // left to the caller's.
      run_with_stack(kWalkStackBytes, [&] { walk_dir(*root_, "", parent_root_.get(), !is_source(""), 0); });
    }
    walked_ = true;
    res_.bytes_total = walk_bytes_;
    release(root_);  // the walker's hold on the root
    report();        // the totals are final from here on
  } catch (...) {
    fail(std::current_exception());
  }
  {
    std::lock_guard g(jobs_mu_);
    walk_done_ = true;
    jobs_not_empty_.notify_all();
  }
  for (auto& t : readers) t.join();
  {
    std::lock_guard g(qmu_);
    readers_done_ = true;
    q_not_empty_.notify_all();
  }
  for (auto& t : workers) t.join();
  pipeline_done = true;
  watcher.join();
  if (counter.joinable()) counter.join();
  check_cancel();
  if (fatal_) std::rethrow_exception(fatal_);
  if (!root_tree_) throw Error(Errc::io, "backup: the root tree was not written");
  parent_root_.reset();
  hardlinks_.clear();

  {
    std::lock_guard g(cur_mu_);
    phase_ = "finalize";
  }
  snap.tree = *root_tree_;
  repo_.flush();
  check_cancel();

  snap.errors = errors_;
  std::sort(snap.errors.begin(), snap.errors.end(), [](auto& a, auto& b) { return a.path < b.path; });
  snap.partial = !snap.errors.empty();
  res_.stats = repo_.stats();
  res_.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
  res_.bytes_total = walk_bytes_;
  res_.bytes_read = res_.stats.bytes_raw_new;
  snap.time = now_rfc3339();
  snap.time_unix = parse_rfc3339(snap.time);
  snap.summary = {{"files_new", res_.files_new},
                  {"files_changed", res_.files_changed},
                  {"files_unmodified", res_.files_unmodified},
                  {"dirs", res_.dirs},
                  {"bytes_total", res_.bytes_total},
                  {"data_added", res_.stats.bytes_stored_new},
                  {"data_added_raw", res_.stats.bytes_raw_new},
                  {"blobs_new", res_.stats.blobs_new},
                  {"duration_s", res_.seconds}};
  if (changed_during_) snap.summary["files_changed_during_backup"] = changed_during_.load();
  // check_lock first: it may complete the metadata (the agent joins a
  // stream's producer there, which records what it learned at the stream's end).
  if (opt_.check_lock) opt_.check_lock();
  if (!opt_.component_metadata.is_null()) snap.component = opt_.component_metadata;
  save_snapshot(repo_, snap);
  res_.snapshot = snap;
  {
    std::lock_guard g(cur_mu_);
    phase_ = "done";
  }
  report();
  return res_;
}

}  // namespace

ChunkProfile choose_profile(const std::string& name, uint64_t size) {
  auto ends = [&](std::string_view suf) {
    return name.size() >= suf.size() && name.compare(name.size() - suf.size(), suf.size(), suf) == 0;
  };
  if (size < (64u << 10)) return ChunkProfile::standard;  // one chunk anyway
  // Kafka's log segments: <20-digit base offset>.log, cut between record batches.
  if (name.size() == 24 && ends(".log") && name.find_first_not_of("0123456789") == 20) return ChunkProfile::kafka;
  // Page-structured databases: bbolt (etcd's member/snap/db), SQLite, LMDB, LevelDB tables, WiredTiger.
  if (name == "db" || ends(".db") || ends(".sqlite") || ends(".sqlite3") || ends(".mdb") || ends(".ldb") || ends(".wt") || ends(".bolt"))
    return ChunkProfile::page;
  // Append-only log segments (Kafka's 20-digit segment names, WALs).
  if (size >= (8u << 20) && (ends(".log") || name.rfind("log.", 0) == 0)) return ChunkProfile::log;
  return ChunkProfile::standard;
}

BackupResult backup(Repository& repo, const BackupOptions& opt) {
  Backup b(repo, opt);
  return b.run();
}

}  // namespace cairn::repo
