// The files drill (docs/drills.md): the snapshot restored into a drill's
// sandbox (agent/sandbox/sandbox.h) read back and checked against the tree
// the backup recorded. Nothing is started; it has no [drill] keys.
#include "agent/drivers/files/drill.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "agent/config_reader.h"
#include "agent/drill_paths.h"
#include "agent/drill_support.h"
#include "agent/platform/http.h"
#include "agent/platform/process.h"
#include "agent/platform/socket_client.h"
#include "agent/sandbox/sandbox.h"
#include "common/repo/repository.h"
#include "common/repo/snapshot.h"
#include "common/repo/walk.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent {

namespace v1 = cairn::v1;
namespace fs = std::filesystem;

namespace drill_internal {

using Report = DrillReport;

// files: every entry of the snapshot's tree, read back from the sandbox.
class ReadBack : public repo::TreeVisitor {
 public:
  ReadBack(repo::Repository& r, std::string root, const std::atomic<bool>* cancel) : repo_(r), root_(std::move(root)), cancel_(cancel) {}
  bool enter(const std::string& path, repo::Node& node, size_t) override {
    if (cancel_ && cancel_->load()) throw Error(Errc::interrupted, "the drill was stopped");
    const std::string real = root_ + path;
    struct stat st {};
    if (::lstat(real.c_str(), &st) != 0) {
      bad(path, "missing from the restored tree");
      return false;
    }
    switch (node.type) {
      case repo::NodeType::dir:
        ++dirs;
        if (!S_ISDIR(st.st_mode)) bad(path, "is not a directory");
        return S_ISDIR(st.st_mode);
      case repo::NodeType::symlink: {
        char buf[4096];
        ssize_t n = ::readlink(real.c_str(), buf, sizeof buf);
        if (n < 0 || std::string(buf, size_t(n)) != node.target) bad(path, "symlink target differs from the snapshot's");
        ++links;
        return true;
      }
      case repo::NodeType::file:
        break;
      default:
        return true;
    }
    ++files;
    if (!S_ISREG(st.st_mode)) return bad(path, "is not a regular file"), true;
    if (uint64_t(st.st_size) != node.size)
      return bad(path, "size " + std::to_string(st.st_size) + ", the snapshot says " + std::to_string(node.size)), true;
    if ((st.st_mode & 07777) != (node.mode & 07777)) bad(path, "mode differs from the snapshot's");
    int64_t mtime = int64_t(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
    if (mtime != node.mtime_ns) bad(path, "mtime differs from the snapshot's");
    if (node.sparse) {
      ++sparse;  // its holes are not chunks: size and metadata only
      return true;
    }
    int fd = ::open(real.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return bad(path, std::string("cannot be read: ") + std::strerror(errno)), true;
    Bytes buf;
    uint64_t off = 0;
    bool differs = false;  // already said why, for this file
    for (const auto& id : node.content) {
      auto loc = repo_.index().lookup(id);
      if (!loc) {
        bad(path, "blob " + to_hex(id).substr(0, 16) + " is not in the repository's index");
        differs = true;
        break;
      }
      buf.resize(loc->raw_length);
      try {
        pread_all(fd, buf.data(), buf.size(), off, real);
      } catch (const Error& e) {
        bad(path, e.what());
        differs = true;
        break;
      }
      if (repo_.blob_id(buf) != id) {
        bad(path, "bytes at offset " + std::to_string(off) + " do not hash to the snapshot's blob " + to_hex(id).substr(0, 16));
        differs = true;
        break;
      }
      off += buf.size();
      bytes += buf.size();
    }
    ::close(fd);
    if (!differs && off != node.size) bad(path, "its blobs cover " + std::to_string(off) + " of its bytes");
    return true;
  }
  bool bad(const std::string& path, const std::string& why) {
    ++mismatches;
    if (bad_paths.size() < 10) bad_paths.push_back(path + ": " + why);
    return false;
  }
  uint64_t files = 0, dirs = 0, links = 0, sparse = 0, bytes = 0, mismatches = 0;
  std::vector<std::string> bad_paths;

 private:
  repo::Repository& repo_;
  std::string root_;
  const std::atomic<bool>* cancel_;
};

void drill_files(TaskContext& ctx, const repo::Snapshot& snap, const std::string& restored, Report& rep, const std::atomic<bool>* cancel) {
  auto t = Clock::now();
  ReadBack rb(*ctx.repo, restored, cancel);
  repo::walk_snapshot(*ctx.repo, snap, rb);
  rep.phases["check"] = seconds_since(t);
  uint64_t expected_files = snap.summary.value("files_new", uint64_t(0)) + snap.summary.value("files_changed", uint64_t(0)) +
                            snap.summary.value("files_unmodified", uint64_t(0));
  rep.check("files in the tree", expected_files, rb.files, expected_files == 0 || expected_files == rb.files);
  rep.check("bytes hashed back to the snapshot's blobs", snap.summary.value("bytes_total", uint64_t(0)), rb.bytes,
            true);  // informational: sparse files' data is not hashed
  rep.check("entries that differ from the snapshot", 0, rb.mismatches, rb.mismatches == 0);
  for (const auto& p : rb.bad_paths) rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "restored entry differs: " + p);
}

}  // namespace drill_internal

namespace files {

namespace {

// files: nothing started; the tree read back (no network of its own, no
// link followed).
class FilesDrill : public DriverDrill {
 public:
  std::string tools_missing(const DrillDecl&) const override { return {}; }
  uint64_t disk_needed(const std::vector<repo::Snapshot>& snaps) const override {
    uint64_t size = 0;
    for (const auto& s : snaps) size += s.summary.value("bytes_total", uint64_t(0));
    return size + (16ull << 20);
  }
  bool runs_on_host_files() const override { return false; }
  bool starts_servers() const override { return false; }
  void run(DrillRun& r) const override {
    r.phase("check");
    drill_internal::drill_files(r.ctx, r.snaps.front(), r.roots.front(), r.rep, r.cancel);
  }
};

}  // namespace

std::shared_ptr<const DriverDrill> make_drill(TableReader*) { return std::make_shared<FilesDrill>(); }

}  // namespace files

}  // namespace cairn::agent
