#include "agent/drivers/zookeeper/layout.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "common/crypto/crypto.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::zookeeper {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\f' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\f' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::optional<uint64_t> parse_u64(std::string_view s, int base) {
  if (s.empty() || s.size() > (base == 16 ? 16u : 20u)) return std::nullopt;
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

uint32_t be32(const uint8_t* p) { return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3]; }
uint64_t be64(const uint8_t* p) { return (uint64_t(be32(p)) << 32) | be32(p + 4); }

// Reads up to n bytes at off; returns how many were read (short at EOF).
size_t pread_some(int fd, uint8_t* buf, size_t n, uint64_t off) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd, buf + got, n - got, static_cast<off_t>(off + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      return got;
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return got;
}

struct Named {
  std::string path;
  uint64_t zxid;
};

// Entries of dir whose name is "<prefix>.<hex>[...]", sorted by zxid.
std::vector<Named> list_named(const std::string& dir, std::string_view prefix) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) throw_errno("open directory", dir, errno);
  std::vector<Named> out;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (auto z = zxid_from_name(name, prefix)) out.push_back({dir + "/" + name, *z});
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(), [](const Named& a, const Named& b) { return a.zxid != b.zxid ? a.zxid < b.zxid : a.path < b.path; });
  return out;
}

bool is_regular(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

ZooConfig parse_zoo_cfg(std::string_view text, const std::string& path) {
  ZooConfig c;
  c.path = path;
  size_t lineno = 0;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    ++lineno;
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == '!') continue;
    size_t sep = line.find_first_of("=:");
    if (sep == std::string_view::npos)
      throw Error(Errc::invalid_input, "'" + path + "' line " + std::to_string(lineno) + ": '" + std::string(line) +
                                           "' is not a 'key=value' property; fix the file");
    std::string key(trim(line.substr(0, sep)));
    std::string value(trim(line.substr(sep + 1)));
    c.props[key] = value;
    if (key.rfind("server.", 0) == 0) {
      if (auto n = parse_u64(std::string_view(key).substr(7), 10)) c.servers[*n] = value;
    }
  }
  auto get = [&](const char* k) {
    auto it = c.props.find(k);
    return it == c.props.end() ? std::string() : it->second;
  };
  c.data_dir = get("dataDir");
  c.data_log_dir = get("dataLogDir");
  c.dynamic_config_file = get("dynamicConfigFile");
  c.client_port_address = get("clientPortAddress");
  if (auto p = get("clientPort"); !p.empty()) {
    auto v = parse_u64(p, 10);
    if (!v || *v == 0 || *v > 65535)
      throw Error(Errc::invalid_input, "'" + path + "': clientPort '" + p + "' is not a port number; fix the file");
    c.client_port = static_cast<int>(*v);
  }
  return c;
}

ZooConfig read_zoo_cfg(const std::string& path) {
  Bytes b = read_file(path, 1 << 20);
  ZooConfig c = parse_zoo_cfg(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()), path);
  if (!c.dynamic_config_file.empty() && is_regular(c.dynamic_config_file)) {
    Bytes d = read_file(c.dynamic_config_file, 1 << 20);
    ZooConfig dyn = parse_zoo_cfg(std::string_view(reinterpret_cast<const char*>(d.data()), d.size()), c.dynamic_config_file);
    for (auto& [n, v] : dyn.servers) c.servers[n] = v;
    // The dynamic file may carry the client port (server.N=...;host:port).
  }
  return c;
}

std::optional<std::pair<std::string, int>> client_of_server_entry(const std::string& value) {
  size_t semi = value.find(';');
  if (semi == std::string::npos) return std::nullopt;
  std::string client(trim(std::string_view(value).substr(semi + 1)));
  std::string host;
  size_t colon = client.rfind(':');
  if (colon != std::string::npos) {
    host = client.substr(0, colon);
    client = client.substr(colon + 1);
  }
  auto port = parse_u64(client, 10);
  if (!port || *port == 0 || *port > 65535) return std::nullopt;
  return std::make_pair(host, static_cast<int>(*port));
}

std::string derive_cluster_id(const ZooConfig& cfg) {
  if (cfg.servers.empty()) return "zk-standalone-" + std::to_string(cfg.client_port);
  std::string all;
  for (const auto& [n, v] : cfg.servers) {
    // The client part after ';' (reconfig syntax) is per member and may
    // change without changing the ensemble: only the quorum addresses count.
    std::string quorum = v.substr(0, v.find(';'));
    all += "server." + std::to_string(n) + "=" + quorum + "\n";
  }
  auto h = crypto::sha256(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(all.data()), all.size()));
  return "zk-" + to_hex(std::span<const uint8_t>(h.data(), 8));
}

std::optional<uint64_t> zxid_from_name(std::string_view name, std::string_view prefix) {
  if (name.size() <= prefix.size() + 1 || name.substr(0, prefix.size()) != prefix || name[prefix.size()] != '.') return std::nullopt;
  std::string_view rest = name.substr(prefix.size() + 1);
  rest = rest.substr(0, rest.find('.'));
  auto v = parse_u64(rest, 16);
  // Java's Long.parseLong(hex) refuses what does not fit a signed long.
  if (!v || *v > uint64_t(INT64_MAX)) return std::nullopt;
  return v;
}

SnapshotCheck check_snapshot(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return SnapshotCheck::unreadable;
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return SnapshotCheck::unreadable;
  std::string_view name(path);
  name = name.substr(name.find_last_of('/') + 1);
  std::string_view ext = name.substr(name.find_last_of('.') + 1);
  if (ext == "gz" || ext == "snappy") {
    // ZooKeeper checks only the magic of a compressed snapshot.
    static const uint8_t gz[] = {0x1f, 0x8b};
    static const uint8_t snappy[] = {0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0};
    const uint8_t* magic = ext == "gz" ? gz : snappy;
    size_t n = ext == "gz" ? sizeof gz : sizeof snappy;
    uint8_t buf[8];
    if (pread_some(fd.get(), buf, n, 0) != n) return SnapshotCheck::too_short;
    return std::memcmp(buf, magic, n) == 0 ? SnapshotCheck::valid : SnapshotCheck::bad_magic;
  }
  // Header and the trailer: at least 10 bytes.
  if (st.st_size < 10) return SnapshotCheck::too_short;
  uint8_t tail[5];
  if (pread_some(fd.get(), tail, 5, static_cast<uint64_t>(st.st_size) - 5) != 5) return SnapshotCheck::too_short;
  if (be32(tail) != 1 || tail[4] != '/') return SnapshotCheck::no_trailer;
  return SnapshotCheck::valid;
}

std::string describe(SnapshotCheck c) {
  switch (c) {
    case SnapshotCheck::valid:
      return "valid";
    case SnapshotCheck::unreadable:
      return "cannot be read";
    case SnapshotCheck::too_short:
      return "too short to be a snapshot";
    case SnapshotCheck::no_trailer:
      return "has no trailer (still being written, or cut short)";
    case SnapshotCheck::bad_magic:
      return "does not start with its compression's magic";
  }
  return "?";
}

Selection select_files(const std::string& data_v2, const std::string& log_v2) {
  Selection s;
  auto snaps = list_named(data_v2, "snapshot");
  bool found = false;
  for (auto it = snaps.rbegin(); it != snaps.rend(); ++it) {
    // AtomicFileOutputStream writes "<name>.tmp" and renames it when done.
    if (it->path.size() > 4 && it->path.compare(it->path.size() - 4, 4, ".tmp") == 0) {
      s.skipped.push_back({it->path, "is a temporary file (still being written)"});
      continue;
    }
    SnapshotCheck c = check_snapshot(it->path);
    if (c == SnapshotCheck::valid) {
      s.snapshot = it->path;
      s.snapshot_zxid = it->zxid;
      found = true;
      break;
    }
    s.skipped.push_back({it->path, describe(c)});
  }
  if (!found) {
    std::string why = "no valid snapshot in '" + data_v2 + "'";
    for (const auto& k : s.skipped) why += "; '" + k.path + "' " + k.reason;
    if (snaps.empty()) why += " (the server writes one when it starts; is this its dataDir?)";
    throw Error(Errc::not_found, why);
  }
  auto logs = list_named(log_v2, "log");
  // As FileTxnLog.getLogFiles: the newest log starting at or before the
  // snapshot's zxid (0 when none does) and every log from there on.
  uint64_t from = 0;
  for (const auto& l : logs) {
    if (l.zxid > s.snapshot_zxid) break;
    from = std::max(from, l.zxid);
  }
  for (const auto& l : logs) {
    if (l.zxid < from) continue;
    s.logs.push_back(l.path);
    s.log_zxids.push_back(l.zxid);
  }
  return s;
}

LogScan scan_log(const std::string& path) {
  LogScan r;
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("open", path, errno);
  uint8_t hdr[16];
  if (pread_some(fd.get(), hdr, 16, 0) != 16 || be32(hdr) != 0x5A4B4C47u /* "ZKLG" */) return r;
  r.header_ok = true;
  uint64_t off = 16;
  std::vector<uint8_t> buf;
  constexpr uint32_t kMaxTxn = 64u << 20;  // above jute.maxbuffer's reach
  for (;;) {
    uint8_t eh[12];
    if (pread_some(fd.get(), eh, 12, off) != 12) break;
    uint64_t crc = be64(eh);
    uint32_t len = be32(eh + 8);
    if (len == 0 || len > kMaxTxn || len < 20) break;
    buf.resize(len + 1);
    if (pread_some(fd.get(), buf.data(), len + 1, off + 12) != len + 1) break;
    if (buf[len] != 'B') break;
    uLong a = ::adler32(0L, Z_NULL, 0);
    a = ::adler32(a, buf.data(), len);
    if (uint64_t(a) != crc) break;
    uint64_t zxid = be64(buf.data() + 12);
    if (r.txns == 0) r.first_zxid = zxid;
    r.last_zxid = zxid;
    ++r.txns;
    off += 12 + len + 1;
  }
  return r;
}

std::optional<uint64_t> read_epoch_file(const std::string& path) {
  if (!is_regular(path)) return std::nullopt;
  try {
    Bytes b = read_file(path, 4096);
    std::string_view s = trim(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
    while (!s.empty() && s.back() == '\n') s = trim(s.substr(0, s.size() - 1));
    return parse_u64(s, 10);
  } catch (const Error&) {
    return std::nullopt;
  }
}

std::string zxid_hex(uint64_t zxid) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(zxid));
  return buf;
}

std::optional<uint64_t> parse_zxid(std::string_view text) {
  text = trim(text);
  if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) return parse_u64(text.substr(2), 16);
  return parse_u64(text, 10);
}

}  // namespace cairn::agent::zookeeper
