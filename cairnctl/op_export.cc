// cairnctl export SET -o DIR and cairnctl import FILE (docs/operations.md
// § Export and import).
//
// An export is a gzip'd tar (libarchive) of a meta.json and a small
// repository, repo/, holding the set's snapshots. The repository is a new one
// with its own keys, encrypted with the source repository's passphrase (or
// --export-password-file's): blob ids are keyed per repository, so every blob
// is re-stored under the new keys (common/repo/copy.h). meta.json describes
// the set and lists every file of repo/ with its size and SHA-256. The export
// is read back and checked (every checksum, then every blob of the small
// repository) before it gets its final name; until then it is a temporary
// file in a staging directory beside it, removed on any failure.
//
// An import reads the archive accepting only meta.json and regular files
// under repo/ (no links, devices, absolute names or ".."), checks the
// checksums and every blob, copies the snapshots into a repository the
// controller declares and asks the controller to record the set, which it
// reads back from that repository itself (controller/catalog_rebuild.h).
// The archive is written and read by cairnctl/archive/export_archive.h.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "cairn/version.h"
#include "cairnctl/archive/export_archive.h"
#include "cairnctl/op_client.h"
#include "cairnctl/op_commands.h"
#include "cairnctl/op_view.h"
#include "common/crypto/crypto.h"
#include "common/repo/checker.h"
#include "common/repo/copy.h"
#include "common/repo/lock.h"
#include "common/repo/snapshot.h"
#include "common/repo/storage/backend.h"
#include "common/repo/storage/redact.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "common/util/terminal_text.h"
#include "controller/catalog_rebuild.h"

namespace cairn::ctl {
namespace {

namespace fs = std::filesystem;

// A staging directory removed when it goes out of scope (no throw).
struct Staging {
  std::string dir;
  explicit Staging(const std::string& parent) {
    mkdir_p(parent, 0755);
    std::string tmpl = parent + "/.cairn-staging-XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw Error(Errc::io, "cannot create a staging directory in '" + parent + "': " + std::strerror(errno));
    dir = tmpl;
  }
  ~Staging() { remove_tree(dir); }
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;
};

std::string hex_sha256_file(const std::string& path, uint64_t& size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) throw Error(Errc::io, "cannot read '" + path + "': " + std::strerror(errno));
  crypto::Sha256 h;
  std::vector<uint8_t> buf(1 << 20);
  size = 0;
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      throw Error(Errc::io, "cannot read '" + path + "': " + std::strerror(err));
    }
    if (n == 0) break;
    h.update({buf.data(), size_t(n)});
    size += uint64_t(n);
  }
  ::close(fd);
  auto d = h.finish();
  return to_hex(std::span<const uint8_t>(d));
}

// Every regular file under root/sub, as names relative to root, sorted.
std::vector<std::string> files_under(const std::string& root, const std::string& sub) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(root + "/" + sub)) {
    if (e.is_symlink() || !(e.is_regular_file() || e.is_directory()))
      throw Error(Errc::io, "'" + e.path().string() + "' is not a regular file");
    if (e.is_regular_file()) out.push_back(fs::relative(e.path(), root).string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The archive itself: cairnctl/archive/export_archive.h.
using export_archive::extract_archive;
using export_archive::kFormat;
using export_archive::write_archive;

// load_index: false for a repository check_whole() reads next (check loads the index itself).
// path: a directory or a repository URL (credentials_file: its credentials, or the store's standard sources).
std::unique_ptr<repo::Repository> open_repo_at(const std::string& path, const repo::Secret& secret, const std::string& what,
                                               bool load_index = true, const std::string& credentials_file = {}) {
  auto be = repo::open_backend(path, {.credentials_file = credentials_file});
  if (!be->size({repo::FileType::config, ""})) throw Error(Errc::no_repo, "no repository at '" + path + "' (" + what + ")");
  std::unique_ptr<repo::Repository> r;
  try {
    r = repo::Repository::open(std::move(be), secret);
  } catch (const Error& e) {
    if (e.code() == Errc::wrong_key) throw Error(Errc::wrong_key, what + ": " + e.what());
    throw;
  }
  if (load_index)
    for (const auto& p : r->load_index())
      throw Error(Errc::corrupt, what + ": index file '" + p.index_file + "' is unusable: " + p.message);
  return r;
}

// Every blob of the small repository verified (check --read-data).
void check_whole(repo::Repository& r, const std::string& what) {
  repo::CheckOptions co;
  co.read_data = true;
  auto rep = repo::check(r, co);
  if (!rep.clean()) {
    std::string first;
    for (const auto& p : rep.problems) {
      first = repo::problem_line(p);
      break;
    }
    throw Error(Errc::corrupt, what + " does not verify (" + std::to_string(rep.errors()) + " problem(s)); first: " + first);
  }
}

// The versions a snapshot records: the program that wrote it and every
// "...version" field of the driver's metadata (etcd_version, zookeeper's...).
nlohmann::json versions_of(const repo::Snapshot& s) {
  nlohmann::json v = nlohmann::json::object();
  if (!s.program.empty()) v["program"] = s.program;
  if (s.component.is_object())
    for (const auto& [k, val] : s.component.items())
      if (k.ends_with("version") && (val.is_string() || val.is_number())) v[k] = val;
  return v;
}

// Letters, digits, '.', '_' and '-' only: the cluster's name goes into a file name.
std::string file_safe(const std::string& s) {
  std::string out;
  for (char c : s) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-') ? c : '-';
  while (!out.empty() && out[0] == '.') out.erase(0, 1);
  return out.empty() ? "cairn" : out;
}

// The i-th name an export may take: base.tar.gz, then base_1.tar.gz, base_2...
constexpr int kMaxNameTries = 10000;
std::string export_name(const std::string& base, int i) { return base + (i ? "_" + std::to_string(i) : "") + ".tar.gz"; }

// Publishes tmp as dir/base.tar.gz, or base_1.tar.gz, base_2... when taken;
// link() never replaces a file. Returns the final path.
std::string publish(const std::string& tmp, const std::string& dir, const std::string& base) {
  for (int i = 0; i < kMaxNameTries; ++i) {
    std::string name = dir + "/" + export_name(base, i);
    if (::link(tmp.c_str(), name.c_str()) == 0) {
      ::unlink(tmp.c_str());
      fsync_dir(dir);
      return name;
    }
    if (errno != EEXIST) throw Error(Errc::io, "cannot create '" + name + "': " + std::strerror(errno));
  }
  throw Error(Errc::exists, "'" + dir + "' holds 10,000 exports named '" + base + "'; choose another directory");
}

// Exports kept in an object store: the object "<store URL>/exports/<name>"
// (repo::FileType::exported), written by `export -o <store URL>` and read by
// `import <store URL>/exports/<name>`. The archive is made and verified in a
// local staging directory first, as for a directory.
constexpr const char* kExportsDir = "/exports/";
constexpr uint64_t kTransferPiece = 16ull << 20;  // ranged reads of a remote export

struct RemoteExport {
  std::string location, name;
  std::string url() const { return location + kExportsDir + name; }
};

// The store and object name of `import`'s argument, or nothing for a local file.
std::optional<RemoteExport> remote_export(const std::string& url) {
  if (!repo::is_remote_location(url)) return std::nullopt;
  if (repo::location_carries_secret(url))
    throw Error(Errc::invalid_input, "'" + terminal_safe(repo::redact_location(url)) +
                                         "' carries credentials or a query: they are never taken from a URL (use a "
                                         "credentials file of mode 0600)");
  auto p = url.rfind(kExportsDir);
  const size_t from = p == std::string::npos ? 0 : p + std::strlen(kExportsDir);
  if (p == std::string::npos || from >= url.size() || url.find('/', from) != std::string::npos)
    throw Error(Errc::invalid_input, "'" + terminal_safe(url) +
                                         "' names no export in an object store: give the URL 'cairnctl export' "
                                         "printed, <store URL>/exports/<name>.tar.gz");
  return RemoteExport{url.substr(0, p), url.substr(from)};
}

// A file mapped read-only: uploaded from the page cache, not copied into memory.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st {};
    if (fd < 0 || ::fstat(fd, &st) != 0) {
      int err = errno;
      if (fd >= 0) ::close(fd);
      throw Error(Errc::io, "cannot read '" + path + "': " + std::strerror(err));
    }
    size_ = size_t(st.st_size);
    if (size_) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
      if (p == MAP_FAILED) {
        int err = errno;
        ::close(fd);
        throw Error(Errc::io, "cannot map '" + path + "': " + std::strerror(err));
      }
      data_ = static_cast<const uint8_t*>(p);
    }
    ::close(fd);
  }
  ~MappedFile() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  std::span<const uint8_t> bytes() const { return {data_, size_}; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// SHA-256 of an object read back in ranges, or throws when its size is not `size`.
std::string hex_sha256_object(repo::Backend& be, const repo::Handle& h, uint64_t size, const std::string& shown) {
  auto have = be.size(h);
  if (!have) throw Error(Errc::not_found, "'" + shown + "' is not in the store after its upload");
  if (*have != size)
    throw Error(Errc::corrupt, "'" + shown + "' holds " + std::to_string(*have) + " bytes after its upload, not " + std::to_string(size));
  crypto::Sha256 sum;
  Bytes piece;
  for (uint64_t off = 0; off < size; off += kTransferPiece) {
    uint64_t n = std::min(kTransferPiece, size - off);
    be.load_into(h, off, n, piece);
    if (piece.size() != n) throw Error(Errc::corrupt, "'" + shown + "' gave a short read at offset " + std::to_string(off));
    sum.update(piece);
  }
  auto d = sum.finish();
  return to_hex(std::span<const uint8_t>(d));
}

// Uploads the verified archive tmp as <location>/exports/<base>.tar.gz (or
// base_1, base_2... when taken), reads it back and compares its SHA-256 with
// sum; an upload that does not read back the same is removed. Returns its URL.
std::string publish_remote(const std::string& tmp, const std::string& location, const std::string& credentials, const std::string& base,
                           uint64_t size, const std::string& sum) {
  auto be = repo::open_backend(location, {.credentials_file = credentials, .cache_dir = "off"});
  std::string name;
  for (int i = 0;; ++i) {
    if (i == kMaxNameTries)
      throw Error(Errc::exists, "'" + location + "' holds 10,000 exports named '" + base + "'; choose another prefix");
    name = export_name(base, i);
    if (!be->size({repo::FileType::exported, name})) break;
  }
  const RemoteExport dst{location, name};
  const repo::Handle h{repo::FileType::exported, name};
  {
    MappedFile m(tmp);
    be->save(h, m.bytes());
  }
  // An upload that does not read back the same is taken away again, or named as left.
  auto discard = [&]() -> std::string {
    try {
      be->remove(h);
      return "; the upload was removed: the export failed";
    } catch (const std::exception& e) {
      return "; the export failed, and the upload could not be removed (" + std::string(e.what()) + "): delete '" + dst.url() + "'";
    }
  };
  std::string back;
  try {
    back = hex_sha256_object(*be, h, size, dst.url());
  } catch (const Error& e) {
    throw Error(e.code(), std::string(e.what()) + discard());
  }
  if (back != sum)
    throw Error(Errc::corrupt, "'" + dst.url() + "' read back with sha256 " + back + ", not the export's " + sum + discard());
  return dst.url();
}

// Downloads an export from a store into dir/name, checking the space first.
std::string download_export(const RemoteExport& src, const std::string& credentials, const std::string& dir) {
  auto be = repo::open_backend(src.location, {.credentials_file = credentials, .cache_dir = "off"});
  const repo::Handle h{repo::FileType::exported, src.name};
  auto size = be->size(h);
  if (!size) throw Error(Errc::not_found, "no export '" + terminal_safe(src.name) + "' in '" + src.location + "' (" + src.url() + ")");
  struct statvfs vfs {};
  if (::statvfs(dir.c_str(), &vfs) == 0 && uint64_t(vfs.f_bavail) * vfs.f_frsize < *size)
    throw Error(Errc::no_space, "the export is " + human_bytes(*size) + " and '" + dir + "' has " +
                                    human_bytes(uint64_t(vfs.f_bavail) * vfs.f_frsize) + " free: give --tmp-dir on a larger filesystem");
  const std::string path = dir + "/download.tar.gz";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) throw Error(Errc::io, "cannot create '" + path + "': " + std::strerror(errno));
  try {
    Bytes piece;
    for (uint64_t off = 0; off < *size; off += kTransferPiece) {
      uint64_t n = std::min(kTransferPiece, *size - off);
      be->load_into(h, off, n, piece);
      if (piece.size() != n) throw Error(Errc::corrupt, "'" + src.url() + "' gave a short read at offset " + std::to_string(off));
      write_all(fd, piece.data(), piece.size(), path);
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return path;
}

struct RepoArgs {
  std::string config, repo, password_file, name = "main", export_password_file;
};

void add_repo_args(CLI::App* cmd, RepoArgs& a, const char* repo_help) {
  cmd->add_option("--config", a.config, "the controller's configuration: the [[repository]] tables it declares");
  cmd->add_option("--repo", a.repo, repo_help);
  cmd->add_option("--password-file", a.password_file, "its passphrase file (mode 0600)");
  cmd->add_option("--repository-name", a.name, "the name the agents and the controller give that repository")->capture_default_str();
  cmd->add_option("--export-password-file", a.export_password_file,
                  "the export's passphrase file (mode 0600); default: the repository's passphrase");
}

repo::Secret passphrase(const std::string& file) { return repo::Secret(repo::Secret::Kind::passphrase, read_secret_file(file)); }

struct ExportPlace {
  std::string out;          // a directory, or an object store's URL
  std::string tmp;          // staging for a store: default $TMPDIR or /tmp
  std::string credentials;  // the store's credentials file (mode 0600); empty: its standard sources
};

int run_export(const OpOptions& o, const RepoArgs& a, const std::string& set_ref, const ExportPlace& place,
               const std::string& cluster_opt) {
  const bool remote = repo::is_remote_location(place.out);
  const std::string out_dir = remote ? (place.tmp.empty() ? fs::temp_directory_path().string() : place.tmp) : place.out;
  cairn::v1::OperatorRequest q;
  q.mutable_backup_show()->set_backup_set_id(set_ref);
  auto set = op_call(o, q).backup_set();
  const std::string set_id = set.backup_set_id();
  if (set.state() == cairn::v1::SET_STATE_RUNNING)
    throw Error(Errc::invalid_input, "backup set " + set_id + " is still running; export it when it has ended");
  if (set.forgotten_at())
    throw Error(Errc::invalid_input, "backup set " + set_id + "'s snapshots were removed by retention (" + local_time(set.forgotten_at()) +
                                         "); it cannot be exported");
  std::vector<const cairn::v1::TaskInfo*> tasks;
  nlohmann::json without = nlohmann::json::array();  // the set's tasks that left no snapshot, and why
  for (const auto& t : set.tasks()) {
    if (t.kind() != cairn::v1::TASK_KIND_BACKUP) continue;
    if (!t.snapshot_id().empty() && !t.snapshot_removed_at()) {
      tasks.push_back(&t);
      continue;
    }
    nlohmann::json reasons = nlohmann::json::array();
    for (const auto& r : t.reasons()) reasons.push_back(r.detail());
    // An expired set cleared from one of its repositories but not yet all.
    if (t.snapshot_removed_at())
      reasons.push_back("its snapshot was removed from repository '" + t.repository() + "' by retention (" +
                        local_time(t.snapshot_removed_at()) + ")");
    without.push_back({{"task_id", t.task_id()},
                       {"agent", t.agent_name()},
                       {"component", t.component()},
                       {"state", task_state_name(t.state())},
                       {"reasons", reasons}});
  }
  if (tasks.empty())
    throw Error(Errc::invalid_input, "backup set " + set_id + " has no snapshot to export (" + set_state_name(set.state()) + ")");
  std::string cluster = cluster_opt;
  if (cluster.empty()) {
    cairn::v1::OperatorRequest sq;
    sq.mutable_status();
    cluster = op_call(o, sq).status().cluster();
  }
  auto sources = repository_sources(a.config, a.repo, a.password_file, a.name);
  auto source_of = [&](const std::string& name) -> const controller::RebuildSource& {
    for (const auto& s : sources)
      if (s.name == name) return s;
    if (name.empty() && sources.size() == 1) return sources[0];
    throw Error(Errc::invalid_input, "the set's snapshots are in repository '" +
                                         (name.empty() ? std::string("(the agent's default)") : name) +
                                         "', which neither --repo (named by --repository-name) nor --config's [[repository]] tables name");
  };
  std::string export_pw_file = a.export_password_file;
  if (export_pw_file.empty()) {
    std::set<std::string> pws;
    for (const auto* t : tasks) pws.insert(source_of(t->repository()).password_file);
    if (pws.size() > 1)
      throw Error(Errc::invalid_input, "the set's snapshots are in repositories with different passphrases: give --export-password-file");
    export_pw_file = *pws.begin();
  }
  auto export_secret = passphrase(export_pw_file);

  mkdir_p(out_dir, 0755);
  Staging st(out_dir);
  const std::string repo_dir = st.dir + "/repo";
  repo::Repository::init(*repo::make_fs_backend(repo_dir), export_secret);
  auto dst = repo::Repository::open(repo::make_fs_backend(repo_dir), export_secret);
  dst->load_index();

  nlohmann::json snaps = nlohmann::json::array();
  uint64_t total_bytes = 0;
  std::map<std::string, std::vector<const cairn::v1::TaskInfo*>> by_repo;
  for (const auto* t : tasks) by_repo[source_of(t->repository()).name].push_back(t);
  for (const auto& [name, list] : by_repo) {
    const auto& src_cfg = source_of(name);
    auto src = open_repo_at(src_cfg.path, passphrase(src_cfg.password_file), "repository '" + name + "' at '" + src_cfg.path + "'", true,
                            src_cfg.credentials_file);
    auto lock = repo::lock_for_reading(*src, "cairnctl export " + set_id);
    repo::SnapshotCopier copier(*src, *dst);
    for (const auto* t : list) {
      auto s = repo::load_snapshot(*src, t->snapshot_id());
      auto tags = repo::tag_values(s);
      if (tags["set"] != set_id || tags["task"] != t->task_id())
        throw Error(Errc::corrupt, "snapshot " + s.id.substr(0, 16) + " in repository '" + name + "' is tagged for set '" + tags["set"] +
                                       "', task '" + tags["task"] + "', not this set's task " + t->task_id() +
                                       ": the catalog and the repository disagree");
      auto n = copier.copy(s);
      if (lock) lock->check("exporting");
      uint64_t bytes =
          s.summary.contains("bytes_total") && s.summary["bytes_total"].is_number_unsigned() ? s.summary["bytes_total"].get<uint64_t>() : 0;
      total_bytes += bytes;
      nlohmann::json j = {{"snapshot_id", n.id},
                          {"source_snapshot_id", s.id},
                          {"source_repository", name},
                          {"task_id", t->task_id()},
                          {"agent", t->agent_name()},
                          {"component", t->component()},
                          {"state", s.partial ? "partial" : "succeeded"},
                          {"time", s.time},
                          {"hostname", s.hostname},
                          {"bytes", bytes},
                          {"files", s.summary.value("files_total", uint64_t(0))},
                          {"component_metadata", s.component},
                          {"versions", versions_of(s)}};
      nlohmann::json reasons = nlohmann::json::array();
      for (const auto& r : t->reasons()) reasons.push_back(r.detail());
      j["reasons"] = reasons;
      snaps.push_back(std::move(j));
    }
    if (lock) lock->release();
  }
  dst->flush();
  dst.reset();

  // The controller signs the set's record naming each snapshot's id in this
  // export: an import takes the set as attested only from it.
  int64_t now = ::time(nullptr);
  const std::string base = "cairn-" + file_safe(cluster) + "-" + utc_stamp(time_t(now));
  nlohmann::json set_record;  // null: none (an unattested set)
  {
    cairn::v1::OperatorRequest aq;
    auto* at = aq.mutable_attest_export();
    at->set_backup_set_id(set_id);
    at->set_export_name(base);
    for (const auto& j : snaps) {
      auto* e = at->add_snapshots();
      e->set_task_id(j["task_id"].get<std::string>());
      e->set_source_snapshot_id(j["source_snapshot_id"].get<std::string>());
      e->set_export_snapshot_id(j["snapshot_id"].get<std::string>());
    }
    if (set.unattested()) {
      warn("backup set " + set_id +
           " is unattested: the export carries no signed set record, and an import takes it "
           "only with --accept-unattested");
    } else {
      set_record = nlohmann::json::parse(op_call(o, aq).set_record());
    }
  }

  nlohmann::json files = nlohmann::json::object();
  uint64_t repo_bytes = 0;
  for (const auto& name : files_under(st.dir, "repo")) {
    uint64_t size = 0;
    files[name] = {{"size", 0}, {"sha256", hex_sha256_file(st.dir + "/" + name, size)}};
    files[name]["size"] = size;
    repo_bytes += size;
  }
  nlohmann::json meta = {{"format", kFormat},
                         {"cluster", cluster},
                         {"exported_at", repo::format_rfc3339(now)},
                         {"exported_by", std::string("cairnctl ") + CAIRN_VERSION},
                         {"backup_set",
                          {{"id", set_id},
                           {"state", set_state_name(set.state())},
                           {"trigger", set.trigger()},
                           {"policy", set.policy()},
                           {"requested_by", set.requested_by()},
                           {"created_at", repo::format_rfc3339(set.created_at())},
                           {"finished_at", set.finished_at() ? repo::format_rfc3339(set.finished_at()) : ""}}},
                         {"components",
                          [&] {
                            std::set<std::string> c;
                            for (const auto& s : snaps) c.insert(s["component"].get<std::string>());
                            return nlohmann::json(c);
                          }()},
                         {"snapshots", snaps},
                         {"tasks_without_snapshot", without},
                         {"set_record", set_record},
                         {"totals", {{"snapshots", snaps.size()}, {"bytes", total_bytes}, {"repository_bytes", repo_bytes}}},
                         {"files", files}};
  std::string meta_text = meta.dump(2) + "\n";
  write_file_atomic(st.dir + "/meta.json", std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(meta_text.data()), meta_text.size()),
                    0600);

  std::vector<std::string> names{"meta.json"};
  for (const auto& [name, f] : files.items()) names.push_back(name);
  const std::string tmp = st.dir + "/export.tar.gz";
  write_archive(tmp, st.dir, names);
  {
    int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::fsync(fd) != 0) throw Error(Errc::io, "cannot sync '" + tmp + "': " + std::strerror(errno));
    ::close(fd);
  }

  // Read it back as an import would, and check every blob, before naming it.
  {
    Staging verify(st.dir);
    auto ex = extract_archive(tmp, verify.dir);
    auto r = open_repo_at(verify.dir + "/repo", export_secret, "the export's repository", false);
    check_whole(*r, "the export written to '" + tmp + "'");
    for (const auto& s : snaps) {
      auto back = repo::load_snapshot(*r, s["snapshot_id"].get<std::string>());
      if (repo::tag_values(back)["set"] != set_id)
        throw Error(Errc::corrupt, "the export's snapshot " + back.id.substr(0, 16) + " lost its set tag");
    }
  }
  uint64_t size = 0;
  std::string sum = hex_sha256_file(tmp, size);
  std::string final_path = remote ? publish_remote(tmp, place.out, place.credentials, base, size, sum) : publish(tmp, out_dir, base);
  if (o.json) {
    std::printf("%s\n", nlohmann::json({{"file", final_path},
                                        {"size", size},
                                        {"sha256", sum},
                                        {"backup_set_id", set_id},
                                        {"snapshots", snaps.size()},
                                        {"verified", true},
                                        {"signed_by", set_record.is_null() ? nlohmann::json() : set_record["key_id"]}})
                            .dump()
                            .c_str());
  } else {
    std::printf("exported backup set %s (%s, %zu snapshot(s), %s of data) to %s\n", set_id.c_str(), set_state_name(set.state()).c_str(),
                snaps.size(), human_bytes(total_bytes).c_str(), final_path.c_str());
    std::printf("verified: every checksum and every blob read back; %s, sha256 %s\n", human_bytes(size).c_str(), sum.c_str());
    if (!set_record.is_null())
      std::printf("signed: the set's record, naming these snapshots, signed by controller key '%s'\n",
                  set_record.value("key_id", "").c_str());
    if (remote) std::printf("uploaded and read back from the store: the same sha256\n");
  }
  return kExitOk;
}

int run_import(const OpOptions& o, const RepoArgs& a, const std::string& given, const std::string& tmp_parent,
               const std::string& credentials, const std::vector<std::string>& trusted_key_args, bool accept_unattested) {
  const auto trusted = trusted_keys(trusted_key_args, "");
  auto sources = repository_sources(a.config, a.repo, a.password_file, a.name);
  const controller::RebuildSource* target = nullptr;
  for (const auto& s : sources)
    if (s.name == a.name) target = &s;
  if (!target && sources.size() == 1 && a.repo.empty()) target = &sources[0];
  if (!target)
    throw Error(Errc::invalid_input, "no repository named '" + a.name + "' to import into: give --repo or --config, and --repository-name");
  const std::string parent = tmp_parent.empty() ? fs::temp_directory_path().string() : tmp_parent;
  // An export in an object store is downloaded into a staging directory of its own first.
  std::optional<Staging> download;
  std::string file = given;
  if (auto r = remote_export(given)) {
    download.emplace(parent);
    file = download_export(*r, credentials, download->dir);
  } else {
    struct stat st_file {};
    if (::stat(file.c_str(), &st_file) != 0 || !S_ISREG(st_file.st_mode)) throw Error(Errc::not_found, "'" + file + "' is not a file");
  }

  const std::string shown = download ? given : file;  // what the messages name
  Staging st(parent);
  auto ex = extract_archive(file, st.dir);
  const std::string set_id = ex.meta["backup_set"].value("id", "");
  if (set_id.empty()) throw Error(Errc::corrupt, "meta.json in '" + shown + "' names no backup set");

  // Already recorded: nothing to copy (an import is safe to run again).
  {
    cairn::v1::OperatorRequest q;
    q.mutable_backup_show()->set_backup_set_id(set_id);
    try {
      auto s = op_call(o, q).backup_set();
      if (s.backup_set_id() == set_id) {
        std::printf("backup set %s is in the catalog already (%s); nothing imported\n", set_id.c_str(), set_state_name(s.state()).c_str());
        return kExitOk;
      }
    } catch (const Error& e) {
      if (e.code() != Errc::not_found) throw;
    }
  }

  auto export_secret = passphrase(a.export_password_file.empty() ? target->password_file : a.export_password_file);
  std::unique_ptr<repo::Repository> src;
  try {
    src = open_repo_at(st.dir + "/repo", export_secret, "the export's repository", false);
  } catch (const Error& e) {
    if (e.code() == Errc::wrong_key)
      throw Error(Errc::wrong_key, "the export is encrypted with another passphrase than the repository's: give --export-password-file");
    throw;
  }
  check_whole(*src, "'" + shown + "'");

  // The export's snapshots, each read by its id (every blob was checked
  // against its id above), and the controller's word on the signed record
  // naming them, before a byte is copied.
  std::vector<repo::Snapshot> exported;
  auto request_record = [&](cairn::v1::ImportRequest& im) {
    im.set_repository(target->name);
    im.set_origin(download ? given : fs::path(file).filename().string());
    im.set_backup_set_id(set_id);
    if (ex.meta.contains("set_record") && ex.meta["set_record"].is_object()) im.set_set_record(ex.meta["set_record"].dump());
    for (const auto& k : trusted) im.add_trusted_keys(std::string(k.begin(), k.end()));
    im.set_accept_unattested(accept_unattested);
    for (const auto& s : exported) {
      im.add_export_snapshot_ids(s.id);
      im.add_export_task_ids(repo::tag_values(s)["task"]);
    }
  };
  if (!ex.meta.contains("snapshots") || !ex.meta["snapshots"].is_array())
    throw Error(Errc::corrupt, "meta.json in '" + shown + "' lists no snapshots");
  for (const auto& m : ex.meta["snapshots"]) {
    std::string id = m.is_object() ? m.value("snapshot_id", "") : "";
    if (!repo::is_snapshot_id(id))
      throw Error(Errc::corrupt, "meta.json in '" + shown + "' names a snapshot '" + terminal_safe(id) + "' that is not an id");
    auto s = repo::load_snapshot(*src, id);
    auto tags = repo::tag_values(s);
    if (tags["set"] != set_id)
      throw Error(Errc::corrupt, "snapshot " + id.substr(0, 16) + " in '" + shown + "' is tagged for set '" + terminal_safe(tags["set"]) +
                                     "', not " + set_id + " as meta.json says");
    if (tags["task"].empty()) throw Error(Errc::corrupt, "snapshot " + id.substr(0, 16) + " in '" + shown + "' names no task");
    exported.push_back(std::move(s));
  }
  {
    cairn::v1::OperatorRequest q;
    request_record(*q.mutable_import_set());
    q.mutable_import_set()->set_check_only(true);
    auto r = op_call(o, q);
    if (r.detail().starts_with("unattested"))
      warn("importing backup set " + set_id + " UNATTESTED (--accept-unattested): " + terminal_safe(r.detail().substr(12)));
  }

  auto dst = open_repo_at(target->path, passphrase(target->password_file), "repository '" + target->name + "' at '" + target->path + "'",
                          true, target->credentials_file);
  auto lock = repo::Lock::acquire(*dst, repo::LockKind::shared, "cairnctl import " + set_id, std::chrono::seconds(60),
                                  [](const std::string& m) { warn(m); });
  // A task whose snapshot an earlier, interrupted import stored already is not copied again.
  std::map<std::string, std::string> have;  // task -> snapshot id in the target
  for (const auto& s : repo::load_snapshots(*dst)) {
    auto t = repo::tag_values(s);
    if (t["set"] == set_id && !t["task"].empty()) have[t["task"]] = s.id;
  }
  repo::SnapshotCopier copier(*src, *dst);
  std::vector<std::string> ids;
  for (const auto& s : exported) {
    if (auto it = have.find(repo::tag_values(s)["task"]); it != have.end()) {
      ids.push_back(it->second);
      continue;
    }
    auto n = copier.copy(s);
    lock->check("importing");
    ids.push_back(n.id);
  }
  lock->release();

  cairn::v1::OperatorRequest q;
  auto* im = q.mutable_import_set();
  request_record(*im);
  for (const auto& id : ids) im->add_snapshot_ids(id);
  auto r = op_call(o, q);
  const auto& s = r.backup_set();
  if (o.json) {
    std::printf("%s\n", proto_json(s).c_str());
  } else {
    std::printf("imported backup set %s (%s, %zu snapshot(s), %llu blob(s) stored) into repository '%s'\n", s.backup_set_id().c_str(),
                set_state_name(s.state()).c_str(), ids.size(), (unsigned long long)copier.stats().blobs_new, target->name.c_str());
    if (s.unattested())
      std::printf("UNATTESTED: restored only with 'cairnctl restore --accept-unattested'\n");
    else
      std::printf("attested: the export's set record verifies under a trusted controller key and names every snapshot\n");
    if (!r.detail().empty()) std::printf("note: %s\n", terminal_safe(r.detail()).c_str());
    std::printf("restore it with 'cairnctl restore %s'; an agent the catalog did not know is pending until approved\n",
                s.backup_set_id().c_str());
  }
  return kExitOk;
}

}  // namespace

void register_op_export(CLI::App& app, Context& ctx) {
  auto* exp = app.add_subcommand("export", "write a backup set as a self-contained, verified .tar.gz (a small repository and meta.json)");
  struct ExportArgs {
    RepoArgs repo;
    std::string set, cluster;
    ExportPlace place;
  };
  auto a = std::make_shared<ExportArgs>();
  exp->add_option("set", a->set, "backup set id (or a unique prefix)")->required();
  exp->add_option("-o,--output", a->place.out,
                  "directory to write cairn-<cluster>-<UTC time>.tar.gz into, or an object store's URL "
                  "(s3:https://host/bucket/prefix, s3://bucket/prefix, azure://account/container/prefix): the "
                  "object <URL>/exports/cairn-<cluster>-<UTC time>.tar.gz")
      ->required();
  exp->add_option("--tmp-dir", a->place.tmp,
                  "with a URL: where the export is made and checked before its upload; default: $TMPDIR or /tmp");
  exp->add_option("--output-credentials", a->place.credentials,
                  "with a URL: the store's credentials file (mode 0600, KEY=VALUE lines as a repository's); "
                  "default: the store's standard sources (environment, shared files)");
  exp->add_option("--cluster", a->cluster, "the cluster's name in the file name; default: the controller's [controller] cluster");
  add_repo_args(exp, a->repo, "the repository the set's snapshots are in (instead of --config's)");
  auto o = std::make_shared<OpOptions>();
  add_op_options(exp, *o);
  exp->callback([&ctx, a, o] { ctx.action = [a, o]() -> int { return run_export(*o, a->repo, a->set, a->place, a->cluster); }; });

  auto* imp = app.add_subcommand("import", "bring an export's backup set into a repository and the controller's catalog");
  struct ImportArgs {
    RepoArgs repo;
    std::string file, tmp, credentials;
    std::vector<std::string> trusted_keys;
    bool accept_unattested = false;
  };
  auto b = std::make_shared<ImportArgs>();
  imp->add_option("file", b->file,
                  "the export (.tar.gz), or its URL in an object store (<store URL>/exports/<name>.tar.gz, as export printed it)")
      ->required();
  imp->add_option("--input-credentials", b->credentials,
                  "with a URL: the store's credentials file (mode 0600); default: the store's standard sources");
  imp->add_option("--tmp-dir", b->tmp, "where the export is unpacked and checked first; default: $TMPDIR or /tmp");
  imp->add_option("--trusted-key", b->trusted_keys,
                  std::string(kTrustedKeyHelp) +
                      ", besides the importing controller's own keys: the exporting controller's "
                      "when it had another key")
      ->allow_extra_args(false);
  imp->add_flag("--accept-unattested", b->accept_unattested,
                "import a set whose export carries no set record that verifies, as unattested (audited; restored only with "
                "--accept-unattested); by default such an export is refused");
  add_repo_args(imp, b->repo, "the repository to import into (instead of --config's)");
  auto o2 = std::make_shared<OpOptions>();
  add_op_options(imp, *o2);
  imp->callback([&ctx, b, o2] {
    ctx.action = [b, o2]() -> int {
      return run_import(*o2, b->repo, b->file, b->tmp, b->credentials, b->trusted_keys, b->accept_unattested);
    };
  });
}

}  // namespace cairn::ctl
