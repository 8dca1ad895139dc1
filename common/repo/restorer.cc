#include "common/repo/restorer.h"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <future>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include "common/repo/chunker.h"
#include "common/repo/memory.h"
#include "common/repo/snapshot.h"
#include "common/repo/tree.h"
#include "common/repo/walk.h"
#include "common/util/cpus.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::repo {

namespace {

using Clock = std::chrono::steady_clock;

// A segment is the unit of parallel work: a run of one file's blobs. Large files
// are split so that one big file does not serialise the whole restore.
constexpr uint64_t kSegmentBytes = 32u << 20;
// One read from a pack covers neighbouring blobs up to this size (and across gaps
// of at most kMaxGap bytes of other files' blobs): fewer syscalls, bounded memory.
constexpr uint64_t kMaxRead = 4u << 20;
constexpr uint64_t kMaxGap = 64u << 10;
// A remote repository: reads shorter than this are served from the whole pack (PackCache).
constexpr uint64_t kWholePackBelow = 1u << 20;
// A writer's read buffer: kMaxRead, or one sealed blob of the largest chunk (its
// compressed form may be a little longer than the chunk, plus the AEAD's bytes).
constexpr size_t kReadBufferBytes = std::max<size_t>(kMaxRead, kMaxChunkSize + (64u << 10));

// A remote repository (an object store): every request costs a round trip, so
// a pack is fetched whole, once, and the blobs of every file that needs it are
// served from memory; at most `cap` packs are held (the least recently used
// goes). Files are restored in tree order, which is mostly the order their
// blobs were stored in: consecutive segments share packs. A pack larger than
// kMaxWholePack is read by ranges as on a local disk.
class PackCache {
 public:
  static constexpr uint64_t kMaxWholePack = 64u << 20;
  PackCache(Backend& be, size_t cap) : be_(be), cap_(std::max<size_t>(cap, 1)) {}

  void read(const std::string& pack, uint64_t start, uint64_t len, Bytes& out) {
    std::shared_future<std::shared_ptr<const Bytes>> f;
    std::promise<std::shared_ptr<const Bytes>> mine;
    bool fetch = false;
    {
      std::lock_guard g(mu_);
      auto it = m_.find(pack);
      if (it == m_.end()) {
        while (m_.size() >= cap_) {
          auto lru = std::min_element(m_.begin(), m_.end(), [](auto& a, auto& b) { return a.second.used < b.second.used; });
          m_.erase(lru);  // holders keep their copy of the future
        }
        it = m_.emplace(pack, Entry{mine.get_future().share(), 0}).first;
        fetch = true;
      }
      it->second.used = ++tick_;
      f = it->second.f;
    }
    if (fetch) {
      try {
        mine.set_value(std::make_shared<const Bytes>(be_.load({FileType::pack, pack})));
      } catch (...) {
        mine.set_exception(std::current_exception());
        std::lock_guard g(mu_);
        m_.erase(pack);  // a later read tries the store again
      }
    }
    std::shared_ptr<const Bytes> whole = f.get();
    if (start + len > whole->size())
      throw Error(Errc::corrupt, "pack '" + pack + "' is shorter than expected (" + std::to_string(whole->size()) + " bytes)");
    out.assign(whole->begin() + std::ptrdiff_t(start), whole->begin() + std::ptrdiff_t(start + len));
  }

 private:
  struct Entry {
    std::shared_future<std::shared_ptr<const Bytes>> f;
    uint64_t used;
  };
  Backend& be_;
  size_t cap_;
  std::mutex mu_;
  std::map<std::string, Entry> m_;
  uint64_t tick_ = 0;
};
constexpr size_t kMaxNameForTemp = 200;  // keeps ".cairn-restore.<name>.<hex>" under NAME_MAX
constexpr std::string_view kTempPrefix = ".cairn-restore.";
// The refusal of a non-empty target looks this far for an interrupted restore's partial files.
constexpr uint64_t kLeftoverHintEntries = 10000;

struct BlobRef {
  BlobId id{};
  BlobLocation loc;
  uint64_t off = 0;  // offset in the file's content stream (holes not counted)
};

// Everything is created relative to its directory's descriptor (mkdirat, openat,
// renameat, linkat, symlinkat...), never through a path: path length is no obstacle
// however deep the tree, and a symlink planted where a directory belongs is never
// followed (directories are opened with O_NOFOLLOW). Entries name their directory
// by its index in dirs_; dirs_[0] is the target itself. Paths are built only for
// messages.
struct FileJob {
  size_t dir = 0;  // index in dirs_
  Node node;       // content cleared; blobs carry it; node.name is the file's name
  std::vector<BlobRef> blobs;
  std::vector<uint64_t> ext_start;  // sparse: content offset where each extent begins
  uint64_t data_bytes = 0;          // sum of blob lengths
  uint64_t logical = 0;             // file size once restored
  std::atomic<int> pending{0};
  std::atomic<uint64_t> written{0};
  std::atomic<bool> failed{false};
  std::mutex mu;  // guards fd, dirfd, tmp, opened, reason
  Fd fd;
  std::shared_ptr<Fd> dirfd;  // held from creating the temporary file until it is renamed or removed
  std::string tmp;            // its temporary name in dirfd
  bool opened = false;
  std::string reason;
  bool ok = false;  // renamed into place
};

struct Segment {
  FileJob* file;
  size_t first, last;  // blob indexes [first, last)
};

// A remote repository's unit of work: one pack, read once (in as few ranges
// as its wanted blobs allow), every file's blobs in it written from that read.
struct PackPart {
  FileJob* file;
  uint32_t blob;      // index in file->blobs
  bool last = false;  // the file's last part in this pack: its pending count drops after it
};
struct PackJob {
  BlobId pack{};
  std::vector<PackPart> parts;  // in pack offset order
};
// A pack is read in ranges of at most kMaxPackRead bytes; wanted blobs further
// apart than kMaxPackGap start a new range (what lies between is not fetched).
constexpr uint64_t kMaxPackRead = 32u << 20;
constexpr uint64_t kMaxPackGap = 1u << 20;

struct Link {
  size_t dir;
  std::string name;
  FileJob* leader;
};

struct Item {
  size_t dir;  // the directory holding it (for a directory: its parent)
  Node node;
};

struct timespec to_ts(int64_t ns) {
  int64_t s = ns / 1000000000, r = ns % 1000000000;
  if (r < 0) {
    r += 1000000000;
    --s;
  }
  return {time_t(s), long(r)};
}

std::string err_text(int e) { return std::strerror(e); }

// The path of name in the directory open as fd, for the few calls without an *at
// form (lsetxattr, remove_all): through /proc, never a path the tree describes.
std::string fd_path(int fd, const std::string& name) { return "/proc/self/fd/" + std::to_string(fd) + "/" + name; }

// Removes whatever is at name in dirfd (file, symlink or whole directory) so it can
// be replaced. A symlink is removed, never followed.
bool remove_existing(int dirfd, const std::string& name) {
  if (::unlinkat(dirfd, name.c_str(), 0) == 0 || errno == ENOENT) return true;
  if (errno != EISDIR && errno != EPERM) return false;
  std::error_code ec;
  std::filesystem::remove_all(fd_path(dirfd, name), ec);
  return !ec;
}

// The first file under dir (depth first, symlinks not followed, at most
// kLeftoverHintEntries entries looked at) named like an interrupted restore's
// partial file; "" when there is none.
std::string first_leftover(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
  for (uint64_t n = 0; !ec && it != end && n < kLeftoverHintEntries; it.increment(ec), ++n)
    if (is_restore_temp_name(it->path().filename().string()) && it->is_regular_file(ec)) return it->path().string();
  return {};
}

// Open directories, opened along the way from the target by name with O_NOFOLLOW
// and kept for reuse, at most kCached of them besides those in use.
class DirFds {
 public:
  static constexpr size_t kCached = 256;
  DirFds(const std::vector<Item>& dirs) : dirs_(dirs) {}
  // A writer thread's own cache (see worker()), starting from the same target.
  DirFds(const DirFds& o) : dirs_(o.dirs_), root_(o.root_) {}
  void set_root(Fd fd) { root_ = std::make_shared<Fd>(std::move(fd)); }
  // The directory's descriptor, or nullptr with errno set.
  std::shared_ptr<Fd> get(size_t dir) {
    if (dir == 0) return root_;
    std::lock_guard g(mu_);
    if (auto it = map_.find(dir); it != map_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      return it->second->second;
    }
    // Climb to the nearest open ancestor, then open down from it.
    std::vector<size_t> chain;
    std::shared_ptr<Fd> at = root_;
    for (size_t d = dir; d != 0; d = dirs_[d].dir) {
      if (auto it = map_.find(d); it != map_.end()) {
        at = it->second->second;
        break;
      }
      chain.push_back(d);
    }
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
      int fd = ::openat(at->get(), dirs_[*it].node.name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) return nullptr;
      at = std::make_shared<Fd>(fd);
      lru_.emplace_front(*it, at);
      map_[*it] = lru_.begin();
      if (lru_.size() > kCached) {
        map_.erase(lru_.back().first);
        lru_.pop_back();
      }
    }
    return at;
  }
  void clear() {
    std::lock_guard g(mu_);
    map_.clear();
    lru_.clear();
  }

 private:
  const std::vector<Item>& dirs_;
  std::shared_ptr<Fd> root_;
  std::mutex mu_;
  std::list<std::pair<size_t, std::shared_ptr<Fd>>> lru_;
  std::unordered_map<size_t, std::list<std::pair<size_t, std::shared_ptr<Fd>>>::iterator> map_;
};

class Restorer {
 public:
  Restorer(Repository& repo, const RestoreOptions& opt) : repo_(repo), opt_(opt) {}
  RestoreResult run(const std::string& snapshot_id);

 private:
  friend class Planner;
  // --- plan
  void add_file(size_t dir, const std::string& path, const Node& n);
  void count_plan(uint64_t bytes);
  std::string path_of(size_t dir) const;  // inside the snapshot; "" for the target
  std::string path_of(size_t dir, const std::string& name) const { return path_of(dir) + "/" + name; }
  std::string dest_of(const std::string& path) const { return target_ + path; }
  // --- work
  void make_dir(size_t i);
  void make_special(Item& it);
  void make_link(Link& l);
  void worker();
  void run_segment(const Segment& s, DirFds& fds);
  bool plan_by_pack(unsigned writers);
  void run_pack(const PackJob& job, DirFds& fds);
  bool ensure_open(FileJob& f, DirFds& fds);
  // Opens b's sealed bytes in place (decrypted over them) as a data blob of its
  // length: "" and data set, or why it cannot be used.
  std::string open_data_blob(const BlobRef& b, std::span<uint8_t> sealed, Bytes& out, std::span<const uint8_t>& data);
  void write_content(FileJob& f, uint64_t off, std::span<const uint8_t> data);
  void fail_file(FileJob& f, const std::string& reason);
  void finalize(FileJob& f);
  // fd: the entry itself (files, directories); -1: name in dirfd (symlinks, fifos, devices)
  void set_meta(int fd, int dirfd, const Node& n, const std::string& path);
  void cleanup_temps();
  void remove_leftovers(size_t dir);
  // --- reporting
  void failure(const std::string& path, const std::string& reason);
  void warning(const std::string& path, const std::string& reason);
  bool cancelled() const { return opt_.cancel && opt_.cancel->load(); }
  Progress progress();
  // The ticker thread and the main thread both report; callers get one call at a time.
  void report() {
    if (!opt_.progress) return;
    Progress p = progress();
    std::lock_guard g(report_mu_);
    opt_.progress(p);
  }
  std::mutex report_mu_;

  Repository& repo_;
  const RestoreOptions& opt_;
  std::string target_;
  std::string snapshot_;  // short id, for messages
  bool root_ = geteuid() == 0;
  RestoreResult res_;
  std::mutex res_mu_;

  std::vector<Item> dirs_;     // pre-order; dirs_[0] is the target
  std::vector<bool> existed_;  // per dirs_ entry: the directory was there before this restore
  DirFds fds_{dirs_};
  std::vector<Item> specials_;  // symlinks, fifos, devices, sockets
  std::vector<std::unique_ptr<FileJob>> files_;
  std::vector<Link> links_;
  std::map<std::pair<uint64_t, uint64_t>, FileJob*> inodes_;
  std::vector<Segment> segments_;
  std::unique_ptr<PackCache> packs_;  // a remote repository's packs, fetched whole (null: read ranges)
  std::atomic<size_t> next_segment_{0};
  std::vector<PackJob> pack_jobs_;  // a remote repository's restore in pack order (plan_by_pack)
  std::atomic<size_t> next_pack_{0};
  std::atomic<uint64_t> tmp_counter_{0};
  uint64_t plan_bytes_ = 0;

  std::atomic<uint64_t> files_done_{0}, files_total_{0}, bytes_done_{0}, bytes_total_{0}, errors_{0};
  std::mutex cur_mu_;
  std::string current_;
  std::string phase_ = "scan";
  Clock::time_point start_ = Clock::now();
};

void Restorer::failure(const std::string& path, const std::string& reason) {
  std::lock_guard g(res_mu_);
  res_.failures.push_back({path, reason});
  ++errors_;
}

void Restorer::warning(const std::string& path, const std::string& reason) {
  std::lock_guard g(res_mu_);
  res_.warnings.push_back({path, reason});
}

std::string Restorer::path_of(size_t dir) const {
  std::vector<size_t> chain;
  size_t len = 0;
  for (size_t d = dir; d != 0; d = dirs_[d].dir) {
    chain.push_back(d);
    len += 1 + dirs_[d].node.name.size();
  }
  std::string p;
  p.reserve(len);
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) p += "/" + dirs_[*it].node.name;
  return p;
}

// What the plan holds is bounded as the walk goes: a tree bomb of a few kilobytes
// would otherwise fill memory long before the walk's entry bound.
void Restorer::count_plan(uint64_t bytes) {
  plan_bytes_ += bytes;
  if (plan_bytes_ > opt_.max_plan_bytes)
    throw Error(Errc::unsupported, "snapshot '" + snapshot_ + "' needs more than " + std::to_string(opt_.max_plan_bytes >> 20) +
                                       " MiB to plan its restore, the bound for one restore (a tree whose directories share "
                                       "subtrees can describe more files than any disk holds); restore a part of it with --include, "
                                       "or, if it really is that large, pass --max-entries");
}

// The plan: directories in pre-order, files, links and the rest, each under the
// index of its directory. A directory is kept when it is selected or holds
// something selected.
class Planner : public TreeVisitor {
 public:
  explicit Planner(Restorer& r) : r_(r) { open_.push_back({0, false, false}); }
  bool enter(const std::string& path, Node& n, size_t) override {
    if (restore_glob_matches(r_.opt_.excludes, path)) return false;
    if (r_.opt_.on_entry) r_.opt_.on_entry(path);
    Open& up = open_.back();
    const size_t parent = up.at;
    bool inc = up.inc || r_.opt_.includes.empty() || restore_glob_matches(r_.opt_.includes, path);
    r_.count_plan(sizeof(Node) + n.name.size() + n.target.size() + n.content.size() * sizeof(BlobRef) + 64);
    if (n.type == NodeType::dir) {
      open_.push_back({r_.dirs_.size(), inc, false});  // up is not used past here
      Item d{parent, Node{}};
      d.node.name = n.name;
      r_.dirs_.push_back(std::move(d));
      return true;
    }
    if (!inc) return false;
    up.any = true;
    if (n.type == NodeType::file)
      r_.add_file(up.at, path, n);
    else
      r_.specials_.push_back({up.at, std::move(n)});
    return false;
  }
  void leave(const std::string&, Node& n, size_t) override {
    Open o = open_.back();
    open_.pop_back();
    if (!o.inc && !o.any) {
      r_.dirs_.resize(o.at);  // nothing selected below: no descendant was kept either
      return;
    }
    n.subtree.reset();
    r_.dirs_[o.at].node = std::move(n);
    open_.back().any = true;
  }
  bool unreadable(const std::string& path, const std::string& why) override {
    r_.failure(path, "cannot read the directory listing: " + why);
    return true;  // the directory itself is still created when selected
  }
  bool too_deep(const std::string& path, const std::string& why) override {
    r_.failure(path, why);
    return true;
  }

 private:
  struct Open {
    size_t at;  // index in dirs_
    bool inc, any;
  };
  Restorer& r_;
  std::vector<Open> open_;
};

void Restorer::add_file(size_t dir, const std::string& path, const Node& n) {
  ++files_total_;
  // Hard links: nodes of this snapshot sharing device and inode become links to the
  // first one, provided they really describe the same content.
  if (n.links > 1) {
    auto key = std::make_pair(n.device, n.inode);
    auto it = inodes_.find(key);
    if (it != inodes_.end()) {
      const Node& l = it->second->node;
      bool same = it->second->blobs.size() == n.content.size() && l.size == n.size && l.sparse == n.sparse && l.extents == n.extents;
      for (size_t i = 0; same && i < n.content.size(); ++i) same = it->second->blobs[i].id == n.content[i];
      if (same) {
        links_.push_back({dir, n.name, it->second});
        return;
      }
    }
  }
  auto f = std::make_unique<FileJob>();
  f->dir = dir;
  f->node = n;
  f->node.content.clear();
  std::string missing;
  uint64_t off = 0;
  for (const auto& id : n.content) {
    auto loc = repo_.index().lookup(id);
    if (!loc) {
      if (missing.empty()) missing = "blob '" + id_hex(id) + "' is not in the index (run 'cairnctl repo check')";
      continue;
    }
    f->blobs.push_back({id, *loc, off});
    off += loc->raw_length;
  }
  f->data_bytes = off;
  if (n.sparse) {
    uint64_t s = 0;
    for (auto [eo, el] : n.extents) {
      f->ext_start.push_back(s);
      s += el;
    }
    if (missing.empty() && off > s) missing = "its content is longer than its sparse extents (damaged tree)";
    f->logical = n.size;
  } else {
    f->logical = off;
  }
  bytes_total_ += f->logical;
  if (n.links > 1) inodes_.emplace(std::make_pair(n.device, n.inode), f.get());
  if (!missing.empty()) {
    f->failed = true;
    f->reason = missing;
    (void)path;
  }
  files_.push_back(std::move(f));
}
}  // namespace

// fnmatch without FNM_PATHNAME: '*' spans '/', so "/srv/a/*" selects the whole subtree.
bool restore_glob_matches(const std::vector<std::string>& globs, const std::string& path) {
  if (globs.empty()) return false;
  std::string base = path.substr(path.rfind('/') + 1);
  for (const auto& g : globs)
    if (fnmatch(g.c_str(), path.c_str(), 0) == 0 || fnmatch(g.c_str(), base.c_str(), 0) == 0) return true;
  return false;
}

bool is_restore_temp_name(std::string_view name) {
  if (!name.starts_with(kTempPrefix)) return false;
  size_t dot = name.rfind('.');
  if (dot <= kTempPrefix.size()) return false;  // no name between the prefix and the suffix
  std::string_view file = name.substr(kTempPrefix.size(), dot - kTempPrefix.size());
  std::string_view suffix = name.substr(dot + 1);
  // The suffix: the process id (at most 8 hex digits) and a 64-bit counter (at most 16).
  if (file.size() > kMaxNameForTemp || suffix.size() < 2 || suffix.size() > 24) return false;
  for (char c : suffix)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::string leftovers_text(const RestoreResult& r, const std::string& target) {
  if (r.leftovers_removed == 0) return {};
  return "removed " + std::to_string(r.leftovers_removed) + " partial file(s) (" + std::to_string(r.leftover_bytes_removed) +
         " bytes) an earlier interrupted restore left in '" + target + "'";
}

namespace {

void Restorer::set_meta(int fd, int dirfd, const Node& n, const std::string& path) {
  bool is_link = n.type == NodeType::symlink;
  const char* name = n.name.c_str();
  if (root_) {
    int rc = fd >= 0 ? ::fchown(fd, n.uid, n.gid) : ::fchownat(dirfd, name, n.uid, n.gid, AT_SYMLINK_NOFOLLOW);
    if (rc != 0) warning(path, "cannot set owner " + std::to_string(n.uid) + ":" + std::to_string(n.gid) + ": " + err_text(errno));
  }
  // xattrs before the mode: setting user.* needs write permission on the inode.
  for (const auto& [k, v] : n.xattrs) {
    int rc = fd >= 0 ? ::fsetxattr(fd, k.c_str(), v.data(), v.size(), 0)
                     : ::lsetxattr(fd_path(dirfd, n.name).c_str(), k.c_str(), v.data(), v.size(), 0);
    if (rc != 0) warning(path, "cannot set extended attribute '" + k + "': " + err_text(errno));
  }
  if (!is_link) {
    int rc = fd >= 0 ? ::fchmod(fd, n.mode & 07777) : ::fchmodat(dirfd, name, n.mode & 07777, 0);
    if (rc != 0) warning(path, "cannot set mode " + std::to_string(n.mode) + ": " + err_text(errno));
  }
  // Snapshots do not record atime (see archiver.cc); the file gets its mtime.
  struct timespec ts[2] = {to_ts(n.atime_ns ? n.atime_ns : n.mtime_ns), to_ts(n.mtime_ns)};
  int rc = fd >= 0 ? ::futimens(fd, ts) : ::utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW);
  if (rc != 0) warning(path, "cannot set times: " + err_text(errno));
}

void Restorer::make_dir(size_t i) {
  const Item& d = dirs_[i];
  const char* name = d.node.name.c_str();
  auto parent = fds_.get(d.dir);
  if (!parent) {
    int e = errno;
    failure(path_of(i), "cannot open the directory '" + dest_of(path_of(d.dir)) + "' to create it in: " + err_text(e));
    return;
  }
  int pfd = parent->get();
  // 0700 while filling it: a read-only directory gets its real mode at the end.
  if (::mkdirat(pfd, name, 0700) == 0) return;
  int e = errno;
  struct stat st {};
  if (e == EEXIST && ::fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (S_ISDIR(st.st_mode)) {
      existed_[i] = true;
      return;
    }
    if (opt_.overwrite && remove_existing(pfd, d.node.name) && ::mkdirat(pfd, name, 0700) == 0) return;
    e = errno;
  }
  failure(path_of(i), "cannot create directory '" + dest_of(path_of(i)) + "': " + err_text(e));
}

void Restorer::make_special(Item& it) {
  const Node& n = it.node;
  const char* name = n.name.c_str();
  if ((n.type == NodeType::chardev || n.type == NodeType::blockdev) && !root_) {
    failure(path_of(it.dir, n.name), std::string(n.type == NodeType::chardev ? "character" : "block") +
                                         " device nodes can only be restored by root (run as root, or --exclude it)");
    return;
  }
  auto parent = fds_.get(it.dir);
  if (!parent) {
    int e = errno;
    failure(path_of(it.dir, n.name), "cannot open the directory '" + dest_of(path_of(it.dir)) + "': " + err_text(e));
    return;
  }
  int pfd = parent->get();
  auto create = [&]() -> int {
    switch (n.type) {
      case NodeType::symlink:
        return ::symlinkat(n.target.c_str(), pfd, name);
      case NodeType::fifo:
        return ::mkfifoat(pfd, name, 0600);
      case NodeType::socket:
        return ::mknodat(pfd, name, S_IFSOCK | 0600, 0);
      case NodeType::chardev:
        return ::mknodat(pfd, name, S_IFCHR | 0600, dev_t(n.rdev));
      case NodeType::blockdev:
        return ::mknodat(pfd, name, S_IFBLK | 0600, dev_t(n.rdev));
      default:
        errno = EINVAL;
        return -1;
    }
  };
  int rc = create();
  if (rc != 0 && errno == EEXIST && opt_.overwrite && remove_existing(pfd, n.name)) rc = create();
  std::string path = path_of(it.dir, n.name);
  if (rc != 0) {
    failure(path, "cannot create " + std::string(node_type_name(n.type)) + " '" + dest_of(path) + "': " + err_text(errno));
  } else {
    set_meta(-1, pfd, n, path);
    std::lock_guard g(res_mu_);
    ++res_.others_restored;
  }
}

void Restorer::make_link(Link& l) {
  ++files_done_;
  std::string path = path_of(l.dir, l.name), leader = path_of(l.leader->dir, l.leader->node.name);
  if (!l.leader->ok) {
    failure(path, "it is a hard link of '" + leader + "', which could not be restored");
    return;
  }
  auto from = fds_.get(l.leader->dir), to = fds_.get(l.dir);
  int rc = -1;
  if (from && to) {
    rc = ::linkat(from->get(), l.leader->node.name.c_str(), to->get(), l.name.c_str(), 0);
    if (rc != 0 && errno == EEXIST && opt_.overwrite && remove_existing(to->get(), l.name))
      rc = ::linkat(from->get(), l.leader->node.name.c_str(), to->get(), l.name.c_str(), 0);
  }
  if (rc != 0) {
    failure(path, "cannot create hard link to '" + dest_of(leader) + "': " + err_text(errno));
    return;
  }
  std::lock_guard g(res_mu_);
  ++res_.files_restored;
}

void Restorer::fail_file(FileJob& f, const std::string& reason) {
  std::lock_guard g(f.mu);
  if (!f.failed.exchange(true)) f.reason = reason;
}

bool Restorer::ensure_open(FileJob& f, DirFds& fds) {
  std::lock_guard g(f.mu);
  if (f.opened) return bool(f.fd);
  f.opened = true;
  std::string path = path_of(f.dir, f.node.name);
  {
    std::lock_guard c(cur_mu_);
    current_ = path;
  }
  f.dirfd = fds.get(f.dir);
  if (!f.dirfd) {
    int e = errno;
    if (!f.failed.exchange(true)) f.reason = "cannot open the directory '" + dest_of(path_of(f.dir)) + "': " + err_text(e);
    return false;
  }
  std::string name = f.node.name;
  if (name.size() > kMaxNameForTemp) name.resize(kMaxNameForTemp);
  for (int attempt = 0; attempt < 100; ++attempt) {
    char suffix[32];
    std::snprintf(suffix, sizeof suffix, "%x%llx", unsigned(::getpid()), (unsigned long long)tmp_counter_++);
    std::string tmp = ".cairn-restore." + name + "." + suffix;
    int fd = ::openat(f.dirfd->get(), tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 && errno == EEXIST) continue;
    if (fd < 0) {
      if (!f.failed.exchange(true)) f.reason = "cannot create '" + dest_of(path_of(f.dir, tmp)) + "': " + err_text(errno);
      return false;
    }
    f.fd = Fd(fd);
    f.tmp = tmp;
    // Locked while it is written (until it has its name, see finalize): a
    // restore starting beside this one takes it for a live file, not for the
    // leftover of a killed one (remove_leftovers). A filesystem without flock
    // leaves it unlocked.
    (void)::flock(fd, LOCK_EX | LOCK_NB);
    // A sparse file gets its size first; the extents are written into it, the rest stays holes.
    if (f.node.sparse && ::ftruncate(fd, off_t(f.logical)) != 0) {
      if (!f.failed.exchange(true)) f.reason = "cannot set the size of '" + dest_of(path_of(f.dir, tmp)) + "': " + err_text(errno);
      return false;
    }
    return true;
  }
  if (!f.failed.exchange(true)) f.reason = "cannot find a free temporary name in '" + dest_of(path_of(f.dir)) + "'";
  return false;
}

void pwrite_all(int fd, const uint8_t* p, size_t n, uint64_t off, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, off_t(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw_errno("cannot write", path, errno);
    }
    p += w;
    n -= size_t(w);
    off += uint64_t(w);
  }
}

void Restorer::write_content(FileJob& f, uint64_t off, std::span<const uint8_t> data) {
  if (!f.node.sparse) {
    pwrite_all(f.fd.get(), data.data(), data.size(), off, f.tmp);
    return;
  }
  // Map the content stream onto the extents it was read from.
  const auto& ext = f.node.extents;
  size_t k = size_t(std::upper_bound(f.ext_start.begin(), f.ext_start.end(), off) - f.ext_start.begin());
  size_t done = 0;
  while (done < data.size()) {
    if (k == 0 || k > ext.size()) throw Error(Errc::corrupt, "its content does not fit its sparse extents (damaged tree)");
    uint64_t in_ext = off + done - f.ext_start[k - 1];
    if (in_ext >= ext[k - 1].second) {
      ++k;
      continue;
    }
    size_t n = size_t(std::min<uint64_t>(data.size() - done, ext[k - 1].second - in_ext));
    pwrite_all(f.fd.get(), data.data() + done, n, ext[k - 1].first + in_ext, f.tmp);
    done += n;
  }
}

std::string Restorer::open_data_blob(const BlobRef& b, std::span<uint8_t> sealed, Bytes& out, std::span<const uint8_t>& data) {
  if (b.loc.type != BlobType::data) return "is not a data blob";
  PackBlob pb{b.id, b.loc.type, b.loc.flags, b.loc.offset, b.loc.length, b.loc.raw_length};
  std::string why;
  if (!repo_.open_blob_in_place(pb, sealed, out, data, why)) return why;
  if (data.size() != b.loc.raw_length) return "has the wrong length";
  return {};
}

void Restorer::run_segment(const Segment& s, DirFds& fds) {
  FileJob& f = *s.file;
  if (!f.failed && ensure_open(f, fds)) {
    auto& be = repo_.backend();
    size_t i = s.first;
    try {
      while (i < s.last && !f.failed) {
        if (cancelled()) {
          fail_file(f, "interrupted");
          break;
        }
        // Neighbouring blobs of one pack are read with one request.
        size_t j = i + 1;
        uint64_t start = f.blobs[i].loc.offset, end = start + f.blobs[i].loc.length;
        while (j < s.last && f.blobs[j].loc.pack == f.blobs[i].loc.pack && f.blobs[j].loc.offset >= end &&
               f.blobs[j].loc.offset - end <= kMaxGap && f.blobs[j].loc.offset + f.blobs[j].loc.length - start <= kMaxRead) {
          end = f.blobs[j].loc.offset + f.blobs[j].loc.length;
          ++j;
        }
        std::string pack = id_hex(f.blobs[i].loc.pack);
        // One read buffer and one chunk buffer per writer, reused for every read: a
        // writer's memory is at most kMaxRead (or one sealed blob) plus one chunk.
        thread_local Bytes buf;
        thread_local Bytes out;
        if (buf.capacity() < kReadBufferBytes) {
          // Once, at their largest: grown step by step they would leave the steps
          // behind in the heap, and a writer would hold twice what it uses.
          buf.reserve(kReadBufferBytes);
          out.reserve(kMaxChunkSize);
        }
        try {
          // Small reads (small files' blobs) from the whole pack; large ones (a big
          // file's run of chunks, up to kMaxRead) by their range: fetching whole
          // packs for them would move the chunks of other files again and again.
          if (packs_ && end - start < kWholePackBelow && f.blobs[i].loc.offset + f.blobs[i].loc.length <= PackCache::kMaxWholePack)
            packs_->read(pack, start, end - start, buf);
          else
            be.load_into({FileType::pack, pack}, start, end - start, buf);
        } catch (const Error& e) {
          fail_file(f, "blob '" + id_hex(f.blobs[i].id) + "' in pack '" + pack + "' cannot be read: " + e.what());
          break;
        }
        for (; i < j; ++i) {
          const BlobRef& b = f.blobs[i];
          std::span<const uint8_t> data;
          std::string why = open_data_blob(b, {buf.data() + (b.loc.offset - start), b.loc.length}, out, data);
          if (!why.empty()) {
            fail_file(f, "blob '" + id_hex(b.id) + "' in pack '" + pack + "' " + why);
            break;
          }
          write_content(f, b.off, data);
          f.written += data.size();
          bytes_done_ += data.size();
        }
      }
    } catch (const std::exception& e) {
      fail_file(f, e.what());  // e.g. the target's disk is full: this file fails, the rest goes on
    }
  }
  if (--f.pending == 0) finalize(f);
}

// docs/repository-format.md § 1.1 Object stores, restore order. Every pack a file needs, in the
// order the tree first needs it (a large file's chunks were stored in order,
// so its packs come one after another and it is open for a short while).
// False, with nothing planned, when the files open at once could pass the
// descriptors this process may hold: the restore then goes file by file.
bool Restorer::plan_by_pack(unsigned writers) {
  std::map<BlobId, size_t> job_of;
  std::vector<PackJob> jobs;
  std::vector<std::pair<size_t, size_t>> span;  // per file with blobs: first and last job index
  for (auto& fp : files_) {
    FileJob* f = fp.get();
    if (f->blobs.empty()) continue;
    size_t lo = SIZE_MAX, hi = 0;
    for (size_t i = 0; i < f->blobs.size(); ++i) {
      auto [it, fresh] = job_of.try_emplace(f->blobs[i].loc.pack, jobs.size());
      if (fresh) jobs.push_back({f->blobs[i].loc.pack, {}});
      jobs[it->second].parts.push_back({f, uint32_t(i)});
      lo = std::min(lo, it->second);
      hi = std::max(hi, it->second);
    }
    span.emplace_back(lo, hi);
  }
  // Files open at once: those whose jobs span the one a writer is at, and the
  // writers may be up to `writers` jobs apart.
  std::vector<int> delta(jobs.size() + writers + 2, 0);
  for (auto [lo, hi] : span) {
    ++delta[lo];
    --delta[std::min(hi + writers + 1, delta.size() - 1)];
  }
  int open = 0, most = 0;
  for (int d : delta) most = std::max(most, open += d);
  struct rlimit rl {};
  uint64_t fds = ::getrlimit(RLIMIT_NOFILE, &rl) == 0 ? uint64_t(rl.rlim_cur) : 1024;
  if (uint64_t(most) + 256 + 2 * writers > fds / 2) return false;
  for (auto& j : jobs) {
    std::stable_sort(j.parts.begin(), j.parts.end(), [](const PackPart& a, const PackPart& b) {
      return a.file->blobs[a.blob].loc.offset < b.file->blobs[b.blob].loc.offset;
    });
    std::set<const FileJob*> seen;
    for (auto it = j.parts.rbegin(); it != j.parts.rend(); ++it)
      if (seen.insert(it->file).second) {
        it->last = true;
        ++it->file->pending;
      }
  }
  pack_jobs_ = std::move(jobs);
  for (auto& fp : files_)
    if (fp->blobs.empty()) {
      fp->pending = 1;
      segments_.push_back({fp.get(), 0, 0});  // created, nothing to write
    }
  return true;
}

void Restorer::run_pack(const PackJob& job, DirFds& fds) {
  auto& be = repo_.backend();
  const std::string pack = id_hex(job.pack);
  thread_local Bytes buf;
  thread_local Bytes out;
  if (out.capacity() < kMaxChunkSize) out.reserve(kMaxChunkSize);
  auto loc = [&](size_t k) -> const BlobLocation& { return job.parts[k].file->blobs[job.parts[k].blob].loc; };
  size_t i = 0;
  while (i < job.parts.size()) {
    // One range: the wanted blobs from i on while they lie close together
    // (a blob two files share, or one file holds twice, is read once).
    uint64_t start = loc(i).offset, end = start + loc(i).length;
    size_t j = i + 1;
    for (; j < job.parts.size(); ++j) {
      uint64_t e = std::max<uint64_t>(end, uint64_t(loc(j).offset) + loc(j).length);
      if (loc(j).offset > end + kMaxPackGap || e - start > kMaxPackRead) break;
      end = e;
    }
    std::string read_error;
    if (cancelled()) {
      read_error = "interrupted";
    } else {
      try {
        be.load_into({FileType::pack, pack}, start, end - start, buf);
      } catch (const Error& e) {
        read_error = e.what();
      }
    }
    // A blob is opened in place (decrypted over its sealed bytes): the next
    // part naming the same blob takes what the first one opened.
    uint64_t opened_at = UINT64_MAX;
    std::span<const uint8_t> opened;
    std::string opened_why;
    for (size_t k = i; k < j; ++k) {
      const PackPart& p = job.parts[k];
      FileJob& f = *p.file;
      const BlobRef& b = f.blobs[p.blob];
      if (read_error == "interrupted") {
        fail_file(f, "interrupted");
      } else if (!read_error.empty()) {
        fail_file(f, "blob '" + id_hex(b.id) + "' in pack '" + pack + "' cannot be read: " + read_error);
      } else if (!f.failed && ensure_open(f, fds)) {
        try {
          if (opened_at != b.loc.offset) {
            opened_at = b.loc.offset;
            opened = {};
            opened_why = open_data_blob(b, {buf.data() + (b.loc.offset - start), b.loc.length}, out, opened);
          }
          if (!opened_why.empty()) {
            fail_file(f, "blob '" + id_hex(b.id) + "' in pack '" + pack + "' " + opened_why);
          } else {
            write_content(f, b.off, opened);
            f.written += opened.size();
            bytes_done_ += opened.size();
          }
        } catch (const std::exception& e) {
          fail_file(f, e.what());  // e.g. the target's disk is full: this file fails, the rest goes on
        }
      }
      if (p.last && --f.pending == 0) finalize(f);
    }
    i = j;
  }
}

void Restorer::finalize(FileJob& f) {
  ++files_done_;
  bytes_done_ += f.logical > f.written ? f.logical - f.written : 0;  // holes and what failed
  std::lock_guard g(f.mu);
  std::string path = path_of(f.dir, f.node.name);
  Fd hold;  // keeps the temporary file's lock (ensure_open) until it is renamed
  if (!f.failed && f.fd) {
    set_meta(f.fd.get(), -1, f.node, path);
    hold = Fd(::dup(f.fd.get()));
    if (::close(f.fd.release()) != 0) {
      f.failed = true;
      f.reason = "cannot write '" + dest_of(path_of(f.dir, f.tmp)) + "': " + err_text(errno);
    }
  }
  if (!f.failed) {
    int dfd = f.dirfd->get();
    const char* name = f.node.name.c_str();
    int rc = ::renameat(dfd, f.tmp.c_str(), dfd, name);
    if (rc != 0 && (errno == EISDIR || errno == ENOTEMPTY || errno == EEXIST) && opt_.overwrite && remove_existing(dfd, f.node.name))
      rc = ::renameat(dfd, f.tmp.c_str(), dfd, name);
    if (rc != 0) {
      f.failed = true;
      f.reason = "cannot rename into '" + dest_of(path) + "': " + err_text(errno);
    }
  }
  f.fd.reset();
  if (f.failed) {
    if (!f.tmp.empty() && f.dirfd) ::unlinkat(f.dirfd->get(), f.tmp.c_str(), 0);
    if (f.reason != "interrupted") failure(path, f.reason);
  } else {
    f.ok = true;
    std::lock_guard r(res_mu_);
    ++res_.files_restored;
    res_.bytes_restored += f.logical;
  }
  f.tmp.clear();
  f.dirfd.reset();
  f.blobs = {};
}

void Restorer::worker() {
  // Each writer opens the directories it writes into itself: threads sharing one
  // open directory contend on its reference count in every *at call.
  DirFds fds(fds_);
  for (;;) {
    size_t i = next_pack_++;
    if (i >= pack_jobs_.size()) break;
    run_pack(pack_jobs_[i], fds);
  }
  for (;;) {
    size_t i = next_segment_++;
    if (i >= segments_.size()) return;
    if (cancelled()) {
      fail_file(*segments_[i].file, "interrupted");
      // Segments not run still hold their file open: finish them without work.
    }
    run_segment(segments_[i], fds);
  }
}

void Restorer::cleanup_temps() {
  for (auto& f : files_) {
    std::lock_guard g(f->mu);
    f->fd.reset();
    if (!f->tmp.empty() && f->dirfd) ::unlinkat(f->dirfd->get(), f->tmp.c_str(), 0);
    f->tmp.clear();
    f->dirfd.reset();
  }
}

// A restore killed mid-way (kill -9, a power cut) leaves the temporary files
// it was writing beside what it had finished; a restore into the same target
// removes them from every directory it writes into that was there before it,
// so that the tree ends as the snapshot's. Only what restore() itself makes
// goes (is_restore_temp_name's rules); a file that does not fit them is the
// user's and stays.
void Restorer::remove_leftovers(size_t dir) {
  auto at = fds_.get(dir);
  if (!at) return;  // make_dir's failure says why
  Fd dfd(::openat(at->get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dfd) return;
  std::vector<std::string> names;
  {
    int lfd = ::dup(dfd.get());
    if (lfd < 0) return;
    std::unique_ptr<DIR, int (*)(DIR*)> d(::fdopendir(lfd), ::closedir);
    if (!d) {
      ::close(lfd);
      return;
    }
    while (auto* e = ::readdir(d.get()))
      if (is_restore_temp_name(e->d_name)) names.emplace_back(e->d_name);
  }
  for (const auto& name : names) {
    Fd fd(::openat(dfd.get(), name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
    struct stat st {
    }, now{};
    if (!fd || ::fstat(fd.get(), &st) != 0) continue;
    if (!S_ISREG(st.st_mode) || st.st_nlink != 1 || st.st_uid != ::geteuid() || (st.st_mode & 07777 & ~mode_t(0600)) != 0) continue;
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK) continue;  // a restore running now writes it
    // Still the file just checked (not one put there since), then gone.
    if (::fstatat(dfd.get(), name.c_str(), &now, AT_SYMLINK_NOFOLLOW) != 0 || now.st_ino != st.st_ino || now.st_dev != st.st_dev) continue;
    if (::unlinkat(dfd.get(), name.c_str(), 0) != 0) {
      warning(path_of(dir, name), "cannot remove this partial file an earlier interrupted restore left: " + err_text(errno));
      continue;
    }
    ++res_.leftovers_removed;
    res_.leftover_bytes_removed += uint64_t(st.st_size);
  }
}

Progress Restorer::progress() {
  Progress p;
  {
    std::lock_guard g(cur_mu_);
    p.current = current_;
    p.phase = phase_;
  }
  p.files_done = files_done_;
  p.files_total = files_total_;
  p.bytes_done = bytes_done_;
  p.bytes_total = bytes_total_;
  p.errors = errors_;
  p.totals_known = p.phase != "scan";
  p.elapsed_s = std::chrono::duration<double>(Clock::now() - start_).count();
  return p;
}

RestoreResult Restorer::run(const std::string& snapshot_id) {
  namespace fs = std::filesystem;
  if (opt_.target.empty()) throw Error(Errc::invalid_input, "no restore target given: use --target DIR");
  target_ = fs::absolute(fs::path(opt_.target)).lexically_normal().string();
  while (target_.size() > 1 && target_.back() == '/') target_.pop_back();
  if (target_ == "/") target_.clear();  // snapshot paths start with '/'
  std::string shown = target_.empty() ? "/" : target_;
  struct stat st {};
  bool target_existed = false;
  if (::stat(shown.c_str(), &st) == 0) {
    target_existed = true;
    if (!S_ISDIR(st.st_mode)) throw Error(Errc::invalid_input, "restore target '" + shown + "' exists and is not a directory");
    if (!opt_.overwrite) {
      std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(shown.c_str()), ::closedir);
      if (!d) throw_errno("cannot list restore target", shown, errno);
      while (auto* e = ::readdir(d.get())) {
        if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
        std::string left = first_leftover(shown);
        if (!left.empty())
          throw Error(Errc::exists, "restore target '" + shown + "' is not empty: it holds partial files an interrupted restore left ('" +
                                        left +
                                        "'); pass --overwrite to finish restoring over it (they are removed), or restore "
                                        "into an empty or new directory");
        throw Error(Errc::exists,
                    "restore target '" + shown +
                        "' is not empty; restore into an empty or new directory, or pass --overwrite to replace existing files");
      }
    }
  } else if (errno != ENOENT) {
    throw_errno("cannot inspect restore target", shown, errno);
  }

  ProgressTicker ticker(opt_.progress_interval, opt_.progress ? std::function<void()>([this] { report(); }) : nullptr);

  Snapshot snap = load_snapshot(repo_, resolve_snapshot(repo_, snapshot_id));
  res_.snapshot_id = snap.id;
  snapshot_ = snap.id.substr(0, 8);
  dirs_.push_back({0, Node{}});  // the target
  {
    Planner planner(*this);
    walk_snapshot(repo_, snap, planner, {.max_entries = opt_.max_entries, .whole_tree = opt_.excludes.empty()});
  }
  if (cancelled()) throw Error(Errc::interrupted, "restore interrupted before anything was written");
  mkdir_p(shown, 0755);
  {
    int fd = ::open(shown.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) throw_errno("cannot open restore target", shown, errno);
    fds_.set_root(Fd(fd));
  }
  files_total_ += specials_.size();
  {
    std::lock_guard g(cur_mu_);
    phase_ = "restore";
  }
  report();

  existed_.assign(dirs_.size(), false);
  existed_[0] = target_existed;
  for (size_t i = 1; i < dirs_.size(); ++i) make_dir(i);
  for (size_t i = 0; i < dirs_.size(); ++i)
    if (existed_[i]) remove_leftovers(i);
  for (auto& s : specials_) {
    make_special(s);
    ++files_done_;
  }

  uint64_t budget = budget_bytes(opt_.memory_budget);
  unsigned n = opt_.threads ? opt_.threads : restore_writers(budget, usable_cpus());
  // From a remote store every request costs a round trip: each pack is read
  // once and every file's blobs in it written from that read (restic's
  // order), where file by file a pack was asked for once per file it holds.
  // Each writer then holds a range of up to kMaxPackRead: as many writers as
  // half the budget allows.
  const unsigned pack_writers = std::max(1u, std::min<unsigned>(n, unsigned(budget / 2 / kMaxPackRead)));
  const bool by_pack = repo_.backend().caps().remote && plan_by_pack(pack_writers);
  if (by_pack) n = pack_writers;
  // Largest first keeps every thread busy to the end; each file is cut into segments.
  std::vector<FileJob*> order;
  if (!by_pack)
    for (auto& f : files_) order.push_back(f.get());
  std::stable_sort(order.begin(), order.end(), [](FileJob* a, FileJob* b) { return a->data_bytes > b->data_bytes; });
  for (FileJob* f : order) {
    size_t first = 0;
    uint64_t acc = 0;
    std::vector<Segment> segs;
    for (size_t i = 0; i < f->blobs.size(); ++i) {
      acc += f->blobs[i].loc.raw_length;
      if (acc >= kSegmentBytes) {
        segs.push_back({f, first, i + 1});
        first = i + 1;
        acc = 0;
      }
    }
    if (first < f->blobs.size() || segs.empty()) segs.push_back({f, first, f->blobs.size()});
    f->pending = int(segs.size());
    segments_.insert(segments_.end(), segs.begin(), segs.end());
  }
  n = unsigned(std::max<size_t>(1, std::min<size_t>(n, segments_.size() + pack_jobs_.size())));
  // Whole packs from a remote store: one per writer and one more, within the same
  // budget the writers' own buffers are sized by.
  if (repo_.backend().caps().remote && !by_pack)
    packs_ =
        std::make_unique<PackCache>(repo_.backend(), std::min<size_t>(n + 1, std::max<uint64_t>(2, budget / 2 / repo_.params().pack_size)));
  {
    std::vector<std::thread> pool;
    for (unsigned i = 0; i < n; ++i) pool.emplace_back([this] { worker(); });
    for (auto& t : pool) t.join();
  }
  if (cancelled()) {
    cleanup_temps();
    throw Error(Errc::interrupted, "restore interrupted; files already restored are complete, no partial file was left behind");
  }
  for (auto& l : links_) make_link(l);
  // Directory metadata last, deepest first: creating children changes a directory's mtime.
  for (size_t i = dirs_.size() - 1; i > 0; --i) {
    auto parent = fds_.get(dirs_[i].dir);
    if (!parent) continue;  // its failure is listed already
    Fd fd(::openat(parent->get(), dirs_[i].node.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) continue;  // likewise
    set_meta(fd.get(), -1, dirs_[i].node, path_of(i));
    ++res_.dirs_restored;
  }
  fds_.clear();
  {
    std::lock_guard g(cur_mu_);
    phase_ = "done";
    current_.clear();
  }
  std::sort(res_.failures.begin(), res_.failures.end(), [](auto& a, auto& b) { return a.path < b.path; });
  res_.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
  report();
  return res_;
}

}  // namespace

RestoreResult restore(Repository& repo, const std::string& snapshot_id, const RestoreOptions& opt) {
  Restorer r(repo, opt);
  return r.run(snapshot_id);
}

}  // namespace cairn::repo
