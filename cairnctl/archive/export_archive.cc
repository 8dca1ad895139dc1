// The archive of an export (export_archive.h): written from a staging
// directory, read back from outside input. Everything read is checked before
// anything is written: names, types, sizes (against meta.json), checksums.
#include "cairnctl/archive/export_archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>

#include "common/crypto/crypto.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "common/util/terminal_text.h"

namespace cairn::ctl::export_archive {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void archive_fail(struct archive* a, const std::string& what) {
  std::string msg = what + ": " + (archive_error_string(a) ? archive_error_string(a) : "unknown error");
  throw Error(Errc::io, msg);
}

}  // namespace

void write_archive(const std::string& path, const std::string& root, const std::vector<std::string>& names) {
  struct archive* a = archive_write_new();
  std::unique_ptr<struct archive, int (*)(struct archive*)> guard(a, archive_write_free);
  if (archive_write_add_filter_gzip(a) != ARCHIVE_OK || archive_write_set_format_pax_restricted(a) != ARCHIVE_OK)
    archive_fail(a, "cannot set up the archive");
  if (archive_write_open_filename(a, path.c_str()) != ARCHIVE_OK) archive_fail(a, "cannot create '" + path + "'");
  std::vector<uint8_t> buf(1 << 20);
  time_t now = ::time(nullptr);
  for (const auto& name : names) {
    std::string src = root + "/" + name;
    int fd = ::open(src.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) throw Error(Errc::io, "cannot read '" + src + "': " + std::strerror(errno));
    struct stat st {};
    ::fstat(fd, &st);
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_size(e, st.st_size);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0600);
    archive_entry_set_mtime(e, now, 0);
    if (archive_write_header(a, e) != ARCHIVE_OK) {
      archive_entry_free(e);
      ::close(fd);
      archive_fail(a, "cannot write '" + name + "' into '" + path + "'");
    }
    archive_entry_free(e);
    for (;;) {
      ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      if (archive_write_data(a, buf.data(), size_t(n)) != n) {
        ::close(fd);
        archive_fail(a, "cannot write '" + name + "' into '" + path + "'");
      }
    }
    ::close(fd);
  }
  if (archive_write_close(a) != ARCHIVE_OK) archive_fail(a, "cannot finish '" + path + "'");
}

// "meta.json" or "repo/<name>/...": relative, no empty, "." or ".." component.
bool allowed_name(const std::string& n) {
  if (n == "meta.json") return true;
  if (!n.starts_with("repo/") || n.size() > 4096) return false;
  size_t start = 0;
  while (start <= n.size()) {
    size_t end = n.find('/', start);
    if (end == std::string::npos) end = n.size();
    std::string c = n.substr(start, end - start);
    if (c.empty() || c == "." || c == "..") return false;
    for (unsigned char ch : c)
      if (ch < 0x20 || ch == 0x7f) return false;
    start = end + 1;
  }
  return true;
}

namespace {

using ArchivePtr = std::unique_ptr<struct archive, int (*)(struct archive*)>;

ArchivePtr open_archive(const std::string& path) {
  ArchivePtr a(archive_read_new(), archive_read_free);
  archive_read_support_filter_gzip(a.get());
  archive_read_support_format_tar(a.get());
  if (archive_read_open_filename(a.get(), path.c_str(), 1 << 16) != ARCHIVE_OK)
    archive_fail(a.get(), "cannot read '" + path + "' as a cairn export (a .tar.gz)");
  return a;
}

// The entry's type and name checked: a directory of repo/ (skipped: true), or
// a regular file named meta.json or repo/... (false). Anything else throws.
bool skip_or_check(archive_entry* e, const std::string& path, const std::string& name) {
  if (archive_entry_filetype(e) == AE_IFDIR) {  // "repo/data/" (GNU tar) or "repo/data": created as files need them
    std::string dir = name;
    while (!dir.empty() && dir.back() == '/') dir.pop_back();
    if (dir == "repo" || (allowed_name(dir) && dir != "meta.json")) return true;
  }
  if (archive_entry_filetype(e) != AE_IFREG || archive_entry_hardlink(e) || archive_entry_symlink(e))
    throw Error(Errc::corrupt, "'" + path + "' holds '" + terminal_safe(name) +
                                   "', which is not a regular file: a cairn export holds only meta.json and its repository's files");
  if (!allowed_name(name))
    throw Error(Errc::corrupt,
                "'" + path + "' holds '" + terminal_safe(name) + "': a cairn export holds only meta.json and files under repo/");
  return false;
}

// The next entry's header and name; false at the end of the archive.
bool next_entry(struct archive* a, const std::string& path, archive_entry*& e, std::string& name) {
  int rc = archive_read_next_header(a, &e);
  if (rc == ARCHIVE_EOF) return false;
  if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) archive_fail(a, "'" + path + "' is damaged or truncated");
  name = archive_entry_pathname(e) ? archive_entry_pathname(e) : "";
  return true;
}

}  // namespace

// Pass one: meta.json (64 MiB at most), read without writing anything; the
// files it lists (name -> size, sha256), their sizes summed.
nlohmann::json read_meta(const std::string& path) {
  ArchivePtr a = open_archive(path);
  std::vector<uint8_t> buf(1 << 20);
  archive_entry* e = nullptr;
  std::string name;
  while (next_entry(a.get(), path, e, name)) {
    if (skip_or_check(e, path, name) || name != "meta.json") continue;  // read past, nothing written
    std::string text;
    for (;;) {
      la_ssize_t n = archive_read_data(a.get(), buf.data(), buf.size());
      if (n < 0) archive_fail(a.get(), "'" + path + "' is damaged or truncated at 'meta.json'");
      if (n == 0) break;
      if (text.size() + size_t(n) > kMaxMeta) throw Error(Errc::corrupt, "meta.json in '" + path + "' is over 64 MiB: not a cairn export");
      text.append(reinterpret_cast<const char*>(buf.data()), size_t(n));
    }
    nlohmann::json meta;
    try {
      meta = nlohmann::json::parse(text);
    } catch (const std::exception& ex) {
      throw Error(Errc::corrupt, "meta.json in '" + path + "' does not parse: " + ex.what());
    }
    // Each field's type checked before its value is read: a wrong type is a
    // damaged export, never an exception of the JSON library.
    if (!meta.is_object() || !meta.contains("format") || !meta["format"].is_string() || meta["format"] != kFormat)
      throw Error(Errc::unsupported,
                  "'" + path + "' is not a cairn export this version reads (format '" + std::string(kFormat) + "' expected)");
    if (!meta["files"].is_object()) throw Error(Errc::corrupt, "meta.json in '" + path + "' lists no files");
    for (const auto& [n, f] : meta["files"].items())
      if (!allowed_name(n) || n == "meta.json" || !f.is_object() || !f.contains("size") || !f["size"].is_number_unsigned() ||
          !f.contains("sha256") || !f["sha256"].is_string() || f["sha256"].get_ref<const std::string&>().empty())
        throw Error(Errc::corrupt, "meta.json in '" + path + "' lists '" + terminal_safe(n) + "' without a valid name, size and sha256");
    return meta;
  }
  throw Error(Errc::corrupt, "'" + path + "' holds no meta.json: not a cairn export");
}

// Reads the archive into dir, accepting only meta.json and regular files under
// repo/ that meta.json lists, each no larger than it says: nothing is written
// before its name and size are checked, and all of them must fit in dir.
Extracted extract_archive(const std::string& path, const std::string& dir) {
  Extracted out;
  out.meta = read_meta(path);
  const auto& listed = out.meta["files"];
  uint64_t total = 0;
  for (const auto& [n, f] : listed.items()) total += f["size"].get<uint64_t>();
  if (struct statvfs vf{}; ::statvfs(dir.c_str(), &vf) == 0 && total > uint64_t(vf.f_bavail) * vf.f_frsize)
    throw Error(Errc::no_space, "the export's files (" + std::to_string(total) + " bytes, as its meta.json lists them) do not fit in '" +
                                    dir + "' (" + std::to_string(uint64_t(vf.f_bavail) * vf.f_frsize) +
                                    " bytes free): give --tmp-dir on a larger disk");
  ArchivePtr a = open_archive(path);
  bool have_meta = false;
  std::vector<uint8_t> buf(1 << 20);
  archive_entry* e = nullptr;
  std::string name;
  while (next_entry(a.get(), path, e, name)) {
    if (skip_or_check(e, path, name)) continue;
    if (name == "meta.json") {
      if (have_meta) throw Error(Errc::corrupt, "'" + path + "' holds meta.json twice");
      have_meta = true;
      continue;  // read in pass one
    }
    if (!listed.contains(name))
      throw Error(Errc::corrupt, "'" + path + "' holds '" + terminal_safe(name) + "', which its meta.json does not list");
    const uint64_t want = listed[name]["size"].get<uint64_t>();
    if (archive_entry_size_is_set(e) && uint64_t(archive_entry_size(e)) != want)
      throw Error(Errc::corrupt, "'" + terminal_safe(name) + "' in '" + path + "' is " + std::to_string(archive_entry_size(e)) +
                                     " bytes, not the " + std::to_string(want) + " its meta.json lists: the export is damaged");
    std::string dst = dir + "/" + name;
    mkdir_p(fs::path(dst).parent_path().string(), 0700);
    int fd = ::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
      if (errno == EEXIST) throw Error(Errc::corrupt, "'" + path + "' holds '" + terminal_safe(name) + "' twice");
      throw Error(Errc::io, "cannot write '" + dst + "': " + std::strerror(errno));
    }
    crypto::Sha256 h;
    uint64_t size = 0;
    for (;;) {
      la_ssize_t n = archive_read_data(a.get(), buf.data(), buf.size());
      if (n < 0) {
        ::close(fd);
        archive_fail(a.get(), "'" + path + "' is damaged or truncated at '" + terminal_safe(name) + "'");
      }
      if (n == 0) break;
      if (size + uint64_t(n) > want) {
        ::close(fd);
        throw Error(Errc::corrupt, "'" + terminal_safe(name) + "' in '" + path + "' is longer than the " + std::to_string(want) +
                                       " bytes its meta.json lists: the export is damaged");
      }
      write_all(fd, buf.data(), size_t(n), dst);
      h.update({buf.data(), size_t(n)});
      size += uint64_t(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) throw Error(Errc::io, "cannot write '" + dst + "': " + std::strerror(errno));
    auto d = h.finish();
    out.files[name] = {size, to_hex(std::span<const uint8_t>(d))};
  }
  // Every file meta.json lists is there with its size and checksum.
  for (const auto& [name, f] : listed.items()) {
    auto it = out.files.find(name);
    if (it == out.files.end()) throw Error(Errc::corrupt, "'" + path + "' lacks '" + terminal_safe(name) + "', which its meta.json lists");
    if (f.value("sha256", "") != it->second.second || f["size"].get<uint64_t>() != it->second.first)
      throw Error(Errc::corrupt,
                  "'" + terminal_safe(name) + "' in '" + path + "' does not match its checksum in meta.json: the export is damaged");
  }
  if (!out.meta["snapshots"].is_array() || out.meta["snapshots"].empty())
    throw Error(Errc::corrupt, "meta.json in '" + path + "' lists no snapshot");
  return out;
}

}  // namespace cairn::ctl::export_archive
