#include "agent/drivers/postgresql/wal_archive.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "agent/drivers/postgresql/recovery.h"
#include "agent/drivers/postgresql/wal.h"
#include "common/crypto/crypto.h"
#include "common/repo/policy.h"
#include "common/repo/snapshot.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::postgresql {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string real_path(const std::string& p) {
  char buf[PATH_MAX];
  if (!::realpath(p.c_str(), buf)) return {};
  return buf;
}

// The cluster's system identifier: the first field of global/pg_control.
uint64_t control_system_id(const std::string& data_dir) {
  Bytes b = read_file(data_dir + "/global/pg_control", 64 << 10);
  if (b.size() < 8) throw Error(Errc::corrupt, "'" + data_dir + "/global/pg_control' is too short");
  uint64_t id;
  std::memcpy(&id, b.data(), 8);
  return id;
}

}  // namespace

WalArchive::WalArchive(std::string component, std::string socket_path, std::string data_dir)
    : component_(std::move(component)), socket_(std::move(socket_path)), data_dir_(std::move(data_dir)) {}

WalArchive::~WalArchive() { stop(); }

namespace {

// One line (a JSON request or reply) over a unix stream socket, at most
// 64 KiB; false on EOF, error or an over-long line.
bool read_line(int fd, std::string* out, int timeout_ms) {
  out->clear();
  char buf[4096];
  while (out->size() < (64u << 10)) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return false;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return false;
    out->append(buf, size_t(n));
    if (auto nl = out->find('\n'); nl != std::string::npos) {
      out->resize(nl);
      return true;
    }
  }
  return false;
}

bool write_line(int fd, const std::string& s) {
  std::string line = s + "\n";
  size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::send(fd, line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += size_t(n);
  }
  return true;
}

sockaddr_un unix_address(const std::string& path) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
  return sa;
}

}  // namespace

void WalArchive::start(BackgroundContext ctx) {
  ctx_ = std::move(ctx);
  // The server's user must reach the socket: a directory the agent makes for
  // it is 0755 whatever the agent's umask (the packaged unit's is 0077).
  const std::string parent = fs::path(socket_).parent_path().string();
  std::error_code ec;
  if (!fs::exists(parent, ec)) {
    mkdir_p(parent, 0755);
    ::chmod(parent.c_str(), 0755);
  }
  struct stat st {};
  if (::lstat(socket_.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      throw Error(Errc::invalid_input, "archive_socket '" + socket_ + "' exists and is not a socket; nothing was removed");
    ::unlink(socket_.c_str());  // left by an agent that did not stop cleanly
  }
  Fd ls(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un sa = unix_address(socket_);
  if (!ls || ::bind(ls.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(ls.get(), 16) != 0)
    throw Error(Errc::io, "cannot listen on archive_socket '" + socket_ + "': " + std::strerror(errno));
  // The server's own user hands files over (the socket's group is the data
  // directory's, and each peer's uid is checked); nobody else.
  struct stat dd {};
  if (::stat(data_dir_.c_str(), &dd) == 0) {
    owner_uid_ = dd.st_uid;
    if (::chown(socket_.c_str(), 0, dd.st_gid) != 0 && ::geteuid() == 0)
      spdlog::warn("component '{}': cannot give archive_socket '{}' to group {}: {}", component_, socket_, dd.st_gid, std::strerror(errno));
  }
  ::chmod(socket_.c_str(), 0660);
  // The private copies of pushed files go to the agent's own directory,
  // emptied here: a killed agent leaves its copies behind.
  if (!ctx_.private_dir.empty()) {
    remove_tree(ctx_.private_dir);
    mkdir_p(ctx_.private_dir, 0700);
    ::chmod(ctx_.private_dir.c_str(), 0700);
  }
  stop_ = false;
  if (ctx_.read_repository)
    checker_ = std::thread([this] {
      auto next = std::chrono::steady_clock::now() + std::chrono::seconds(3);
      while (!stop_) {
        if (std::chrono::steady_clock::now() < next) {
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
          continue;
        }
        check_now();
        next = std::chrono::steady_clock::now() + check_interval_;
      }
    });
  thread_ = std::thread([this, fd = ls.release()] {
    Fd listener(fd);
    if (server_view_) {
      try {
        auto [name, at] = server_view_();
        std::lock_guard g(mu_);
        if (last_archived_at_ == 0 && !name.empty()) {
          last_archived_ = name;
          last_archived_at_ = at;
        }
      } catch (const std::exception& e) {
        spdlog::info("component '{}': the server's archiver status cannot be read yet: {}", component_, e.what());
      }
    }
    while (!stop_) {
      pollfd p{listener.get(), POLLIN, 0};
      if (::poll(&p, 1, 500) <= 0) continue;
      Fd conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn) continue;
      ucred cred{};
      socklen_t len = sizeof cred;
      std::string req;
      if (::getsockopt(conn.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || (cred.uid != 0 && cred.uid != owner_uid_)) {
        spdlog::warn(
            "component '{}': refused a WAL request from uid {} (only the data directory's owner, uid {}, "
            "hands WAL over)",
            component_, cred.uid, owner_uid_);
        write_line(conn.get(), json{{"ok", false}, {"error", "this user may not hand WAL to the agent"}}.dump());
        continue;
      }
      if (!read_line(conn.get(), &req, 10000)) continue;
      write_line(conn.get(), handle(req));
    }
  });
  spdlog::info("component '{}': archive_command hands WAL to '{}' (cairn-agent wal-push --socket {} %p)", component_, socket_, socket_);
}

void WalArchive::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (checker_.joinable()) checker_.join();
  if (!private_dir_.empty()) remove_tree(private_dir_);
  private_dir_.clear();
  struct stat st {};
  if (!socket_.empty() && ::lstat(socket_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(socket_.c_str());
}

std::string WalArchive::handle(const std::string& request) {
  json reply;
  try {
    json j = json::parse(request);
    if (!j.is_object() || j.value("op", "") != "push" || !j.contains("path") || !j["path"].is_string())
      throw Error(Errc::invalid_input, "malformed request (expected {\"op\":\"push\",\"path\":...})");
    reply = {{"ok", true}, {"snapshot", push(j["path"].get<std::string>())}};
  } catch (const json::exception&) {
    reply = {{"ok", false}, {"error", "malformed request: not JSON"}};
  } catch (const std::exception& e) {
    spdlog::warn("component '{}': WAL not archived: {}", component_, e.what());
    reply = {{"ok", false}, {"error", e.what()}};
    std::lock_guard g(mu_);
    ++failures_;
    last_error_ = e.what();
    last_error_at_ = std::time(nullptr);
  }
  return reply.dump();
}

cairn::v1::WalArchiveStatus WalArchive::status() const {
  cairn::v1::WalArchiveStatus s;
  s.set_component(component_);
  {
    std::lock_guard g(mu_);
    s.set_last_archived(last_archived_);
    s.set_last_archived_at(last_archived_at_);
    s.set_failures(failures_);
    s.set_last_error(last_error_.substr(0, 1024));
    s.set_last_error_at(last_error_at_);
  }
  {
    std::lock_guard g(mu_);
    for (const auto& gap : gaps_) *s.add_gaps() = gap;
    s.set_checked_at(checked_at_);
    s.set_check_error(check_error_.substr(0, 1024));
  }
  uint32_t pending = 0;
  std::error_code ec;
  for (fs::directory_iterator it(data_dir_ + "/pg_wal/archive_status", ec), end; !ec && it != end; it.increment(ec))
    if (it->path().extension() == ".ready") ++pending;
  s.set_pending(pending);
  return s;
}

void WalArchive::check_now() {
  std::vector<cairn::v1::WalGap> gaps;
  std::string error;
  try {
    const std::string system_id = std::to_string(control_system_id(data_dir_));
    ctx_.read_repository([&](repo::Repository& r) {
      const std::string scratch = scratch_dir() + "/histories";
      struct Remove {
        std::string p;
        ~Remove() { remove_tree(p); }
      } remove{scratch};
      for (const auto& run : check_archive(r, repo::load_snapshots(r), system_id, scratch, &stop_)) {
        cairn::v1::WalGap g;
        g.set_timeline(run.timeline);
        g.set_first_missing(segment_name(run.timeline, run.first));
        g.set_missing(uint32_t(std::min<uint64_t>(run.count, UINT32_MAX)));
        g.set_next_archived(segment_name(run.timeline, run.next));
        gaps.push_back(std::move(g));
      }
    });
  } catch (const std::exception& e) {
    error = e.what();
  }
  std::lock_guard g(mu_);
  if (!error.empty()) {
    if (error != check_error_) spdlog::warn("component '{}': the archive's WAL could not be checked: {}", component_, error);
  } else {
    for (const auto& gap : gaps)
      if (std::none_of(gaps_.begin(), gaps_.end(),
                       [&](const auto& o) { return o.first_missing() == gap.first_missing() && o.missing() == gap.missing(); }))
        spdlog::error(
            "component '{}': the WAL archive has a gap on timeline {}: {} segment(s) from '{}' are not in the "
            "repository, though '{}' is; recovery cannot pass it: take a base backup now",
            component_, gap.timeline(), gap.missing(), gap.first_missing(), gap.next_archived());
    gaps_ = std::move(gaps);
  }
  check_error_ = error;
  checked_at_ = std::time(nullptr);
}

std::string WalArchive::scratch_dir() {
  std::lock_guard g(scratch_mu_);
  if (private_dir_.empty()) {
    std::string tmpl =
        ctx_.private_dir.empty() ? (fs::temp_directory_path() / "cairn-wal-XXXXXX").string() : ctx_.private_dir + "/wal-XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw Error(Errc::io, std::string("cannot make a private directory: ") + std::strerror(errno));
    private_dir_ = tmpl;
  }
  return private_dir_;
}

std::string WalArchive::push(const std::string& path) {
  const std::string name = fs::path(path).filename().string();
  auto wn = parse_wal_name(name);
  if (!wn) throw Error(Errc::invalid_input, "'" + name + "' is not the name of a WAL file PostgreSQL archives");
  // Only the server's own pg_wal: the socket's peers are the server's user,
  // who must not be able to make root read any other file. The file is
  // opened once, without following a link, relative to the directory opened
  // before it, and what was opened is checked (fstat), never the path again:
  // a peer swapping the name for a link between a check and the open gains
  // nothing. Errors never quote the file's contents.
  const std::string wal_dir = real_path(data_dir_ + "/pg_wal");
  if (wal_dir.empty()) throw Error(Errc::not_found, "'" + data_dir_ + "/pg_wal' does not exist");
  if (real_path(fs::path(path).parent_path().string()) != wal_dir)
    throw Error(Errc::invalid_input, "'" + path + "' is not a file in '" + wal_dir + "' (data_dir of component '" + component_ +
                                         "'): check archive_socket and data_dir");
  Fd dir(::open(wal_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  struct stat dst {};
  if (!dir || ::fstat(dir.get(), &dst) != 0) throw Error(Errc::io, "cannot open '" + wal_dir + "': " + std::strerror(errno));
  if (owner_uid_ && dst.st_uid != owner_uid_)
    throw Error(Errc::invalid_input,
                "'" + wal_dir + "' is not owned by the data directory's owner (uid " + std::to_string(owner_uid_) + "); nothing was read");
  const std::string real = wal_dir + "/" + name;
  Fd f(::openat(dir.get(), name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!f)
    throw Error(errno == ELOOP ? Errc::invalid_input : Errc::io,
                "'" + real + "' " +
                    (errno == ELOOP ? std::string("is a symbolic link; nothing was read")
                                    : std::string("cannot be opened: ") + std::strerror(errno)));
  struct stat st {};
  if (::fstat(f.get(), &st) != 0 || !S_ISREG(st.st_mode))
    throw Error(Errc::invalid_input, "'" + real + "' is not a regular file; nothing was read");
  if (owner_uid_ && st.st_uid != owner_uid_)
    throw Error(Errc::invalid_input,
                "'" + real + "' is not owned by the data directory's owner (uid " + std::to_string(owner_uid_) + "); nothing was read");
  const bool segment = wn->kind == WalFileKind::segment || wn->kind == WalFileKind::partial;
  const uint64_t limit = segment ? kWalSegmentSize : wn->kind == WalFileKind::history ? (1u << 20) : (64u << 10);
  if (uint64_t(st.st_size) > limit)
    throw Error(Errc::invalid_input, "'" + real + "' is " + std::to_string(st.st_size) + " bytes, more than a " +
                                         (segment ? "segment" : "history file") + " holds; it was not archived");
  Bytes bytes(size_t(st.st_size));
  size_t got = 0;
  while (got < bytes.size()) {
    ssize_t n = ::read(f.get(), bytes.data() + got, bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += size_t(n);
  }
  bytes.resize(got);
  std::string_view view(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  uint64_t system_id = control_system_id(data_dir_);
  if (segment) {
    SegmentCheck c = check_segment(view, *wn);
    if (!c.problem.empty()) throw Error(Errc::corrupt, c.problem + "; it was not archived");
    if (c.system_id != system_id)
      throw Error(Errc::invalid_input, "WAL segment '" + name + "' belongs to database system " + std::to_string(c.system_id) +
                                           ", not to the one in '" + data_dir_ + "' (" + std::to_string(system_id) + ")");
  } else if (wn->kind == WalFileKind::history) {
    (void)parse_history(std::string(view));
  } else if (view.find("START WAL LOCATION") == std::string_view::npos) {
    throw Error(Errc::corrupt, "backup history file '" + name + "' has no START WAL LOCATION");
  }
  const std::string digest = to_hex(crypto::sha256(bytes));
  if (auto it = stored_.find(name); it != stored_.end()) {
    if (it->second == digest) return "already-stored";
    throw Error(Errc::exists, "'" + name + "' was archived before with other contents; it is not overwritten");
  }
  char sys[32];
  std::snprintf(sys, sizeof sys, "%llu", static_cast<unsigned long long>(system_id));
  char tli[16];
  std::snprintf(tli, sizeof tli, "%08X", wn->timeline);
  std::vector<std::string> tags = {
      "cairn", "wal", "component:" + component_, "wal:" + name, std::string("wal-timeline:") + tli, std::string("pg-system:") + sys};
  // A piece of the system's log (common/repo/policy.h): every base backup
  // from before it replays a segment; every one reads the history files.
  if (wn->kind == WalFileKind::segment)
    tags.push_back(repo::log_piece_tag(std::string("pg-") + sys, wn->segno));
  else if (wn->kind == WalFileKind::history)
    tags.push_back(repo::log_piece_tag(std::string("pg-") + sys, UINT64_MAX));
  if (!ctx_.store_file) throw Error(Errc::invalid_input, "the WAL archive has no repository");
  // What is stored is the bytes checked above, from a private copy (a 0700
  // directory of the agent's), under the file's own path in pg_wal.
  const std::string copy = private_copy(name, bytes, st);
  struct Unlink {
    std::string p;
    ~Unlink() { ::unlink(p.c_str()); }
  } unlink_copy{copy};
  std::string id = ctx_.store_file(real, copy, tags);
  // Bounded: the names of recent files are what a retry repeats.
  if (stored_.size() >= 4096) stored_.erase(stored_.begin());
  stored_[name] = digest;
  {
    std::lock_guard g(mu_);
    last_archived_ = name;
    last_archived_at_ = std::time(nullptr);
  }
  if (wn->kind == WalFileKind::segment) {
    if (last_timeline_ == wn->timeline && wn->segno > last_segno_ + 1)
      spdlog::warn(
          "component '{}': WAL segment '{}' follows '{}': {} segment(s) between them were not handed to "
          "this agent (archived before it started?)",
          component_, name, segment_name(last_timeline_, last_segno_), wn->segno - last_segno_ - 1);
    last_timeline_ = wn->timeline;
    last_segno_ = wn->segno;
  }
  spdlog::debug("component '{}': archived '{}' as snapshot {}", component_, name, id.substr(0, 8));
  return id;
}

std::string WalArchive::private_copy(const std::string& name, const Bytes& bytes, const struct stat& like) {
  const std::string p = scratch_dir() + "/" + name;
  write_file_atomic(p, std::span<const uint8_t>(bytes.data(), bytes.size()), 0600);
  // The snapshot records the file as the server wrote it: its owner, mode
  // and times (a restore gives the server back files it can read).
  if (::chown(p.c_str(), like.st_uid, like.st_gid) != 0 && ::geteuid() == 0)
    throw Error(Errc::io, "cannot give the copy of '" + name + "' its owner: " + std::strerror(errno));
  ::chmod(p.c_str(), like.st_mode & 07777);
  const struct timespec times[2] = {like.st_atim, like.st_mtim};
  ::utimensat(AT_FDCWD, p.c_str(), times, 0);
  return p;
}

int wal_push_main(const std::string& socket_path, const std::string& file, std::chrono::seconds timeout) {
  std::string abs = real_path(file);
  if (abs.empty()) {
    std::fprintf(stderr, "cairn-agent wal-push: '%s': %s\n", file.c_str(), std::strerror(errno));
    return 1;
  }
  struct stat st {};
  if (::stat(socket_path.c_str(), &st) != 0) {
    std::fprintf(stderr,
                 "cairn-agent wal-push: the agent's WAL socket '%s' cannot be reached (%s): is cairn-agent running "
                 "with this component? PostgreSQL keeps '%s' and tries again\n",
                 socket_path.c_str(), std::strerror(errno), file.c_str());
    return 1;
  }
  // A unix stream socket: an agent that is not running is refused at once,
  // and one killed while it stores the file closes the connection, so
  // PostgreSQL hears of it at once rather than at the timeout.
  Fd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un sa = unix_address(socket_path);
  if (!s || ::connect(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    std::fprintf(stderr,
                 "cairn-agent wal-push: nobody listens on the agent's WAL socket '%s' (%s): is cairn-agent running? "
                 "PostgreSQL keeps '%s' and tries again\n",
                 socket_path.c_str(), std::strerror(errno), file.c_str());
    return 1;
  }
  std::string reply;
  if (!write_line(s.get(), json{{"op", "push"}, {"path", abs}}.dump()) ||
      !read_line(s.get(), &reply, int(std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()))) {
    std::fprintf(stderr,
                 "cairn-agent wal-push: no answer from the agent (it stopped, or took longer than %lld s); "
                 "'%s' is not archived yet\n",
                 static_cast<long long>(timeout.count()), file.c_str());
    return 1;
  }
  try {
    json j = json::parse(reply);
    if (j.value("ok", false)) return 0;
    std::fprintf(stderr, "cairn-agent wal-push: '%s' not archived: %s\n", file.c_str(),
                 j.value("error", std::string("no reason given")).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cairn-agent wal-push: '%s' not archived: unreadable answer (%s)\n", file.c_str(), e.what());
  }
  return 1;
}

}  // namespace cairn::agent::postgresql
