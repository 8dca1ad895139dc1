#include "agent/drivers/kafka/log_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::kafka {

namespace {

constexpr size_t kMaxSmallFile = 64u << 20;  // checkpoints, meta.properties

bool ends_with(const std::string& s, std::string_view suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// "00000000000000001234.log" -> 1234
std::optional<uint64_t> segment_base(const std::string& name, std::string_view suffix) {
  if (name.size() != 20 + suffix.size() || !ends_with(name, suffix) || !all_digits(std::string_view(name).substr(0, 20)))
    return std::nullopt;
  return std::stoull(name.substr(0, 20));
}

std::string text_of(const std::string& path) {
  Bytes b = read_file(path, kMaxSmallFile);
  return std::string(b.begin(), b.end());
}

struct Entry {
  std::string name;
  bool dir = false, reg = false;
};

std::vector<Entry> entries(const std::string& dir) {
  std::vector<Entry> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) throw_errno("cannot open directory", dir, errno);
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    struct stat st {};
    if (::fstatat(::dirfd(d), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone meanwhile
    out.push_back({n, S_ISDIR(st.st_mode), S_ISREG(st.st_mode)});
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.name < b.name; });
  return out;
}

void make_dir(const std::string& path, const std::string& like) {
  struct stat st {};
  mode_t mode = ::stat(like.c_str(), &st) == 0 ? (st.st_mode & 07777) : 0755;
  if (::mkdir(path.c_str(), mode) != 0) throw_errno("cannot create directory", path, errno);
  if (::geteuid() == 0 && ::stat(like.c_str(), &st) == 0) (void)::chown(path.c_str(), st.st_uid, st.st_gid);
}

uint64_t size_of(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 ? uint64_t(st.st_size) : 0;
}

// A file vanished between listing and linking: the partition is taken again.
struct Vanished {
  std::string path;
};

void link_file(const std::string& src, const std::string& dst, Staged& st) {
  if (::link(src.c_str(), dst.c_str()) != 0) {
    int e = errno;
    if (e == ENOENT) throw Vanished{src};
    if (e != EXDEV && e != EPERM) throw_errno("cannot hard-link '" + src + "' as", dst, e);
    throw Error(Errc::invalid_input, "cannot hard-link '" + src + "' into the staging directory '" + dst +
                                         "': it is on another filesystem; set 'staging_dir' to a directory on the "
                                         "filesystem of the log dir (outside the log dir)");
  }
  st.files_linked++;
  st.bytes += size_of(dst);
}

void copy_one(const std::string& src, const std::string& dst, Staged& st) {
  try {
    copy_file_sparse(src, dst);
  } catch (const Error& e) {
    if (e.sys_errno() == ENOENT) throw Vanished{src};
    throw;
  }
  st.files_copied++;
  st.bytes += size_of(dst);
}

// One partition directory; returns its positions.
PartitionPositions stage_partition(const std::string& src, const std::string& dst, const std::string& name,
                                   const std::map<std::string, int64_t>& hw, const std::map<std::string, int64_t>& rp,
                                   const std::map<std::string, int64_t>& ls, bool offline, Staged& st) {
  make_dir(dst, src);
  auto files = entries(src);
  std::vector<std::pair<uint64_t, std::string>> segments;
  for (const auto& f : files)
    if (f.reg)
      if (auto b = segment_base(f.name, ".log")) segments.emplace_back(*b, f.name);
  std::sort(segments.begin(), segments.end());
  PartitionPositions pos;
  auto find = [&](const std::map<std::string, int64_t>& m) {
    auto it = m.find(name);
    return it == m.end() ? int64_t(-1) : it->second;
  };
  pos.high_watermark = find(hw);
  pos.recovery_point = find(rp);
  pos.log_start = find(ls);
  if (pos.log_start < 0 && !segments.empty()) pos.log_start = int64_t(segments.front().first);
  std::map<uint64_t, bool> final_segment;  // base offset -> linked with its indexes
  for (size_t i = 0; i < segments.size(); ++i) {
    const auto& [base, log] = segments[i];
    // Wholly below the high watermark: no follower truncation can touch it.
    bool final = offline || (i + 1 < segments.size() && pos.high_watermark >= 0 && segments[i + 1].first <= uint64_t(pos.high_watermark));
    final_segment[base] = final;
    if (final)
      link_file(src + "/" + log, dst + "/" + log, st);
    else
      copy_one(src + "/" + log, dst + "/" + log, st);
    pos.segments++;
    if (i + 1 == segments.size()) {
      SegmentEnd end = scan_segment(dst + "/" + log, base);
      pos.log_end = int64_t(end.next_offset);
    }
  }
  if (segments.empty()) pos.log_end = pos.log_start;
  for (const auto& f : files) {
    if (!f.reg || skipped(f.name, false)) continue;
    if (segment_base(f.name, ".log")) continue;
    std::optional<uint64_t> idx;
    for (auto suf : {".index", ".timeindex", ".txnindex"})
      if (!idx) idx = segment_base(f.name, suf);
    if (idx) {
      // A finished segment's indexes go with it; an active one's are
      // preallocated and rebuilt by the broker from the segment.
      auto it = final_segment.find(*idx);
      if (it != final_segment.end() && it->second) {
        try {
          link_file(src + "/" + f.name, dst + "/" + f.name, st);
        } catch (const Vanished&) {
          // an index removed with its segment (retention): the segment is linked, the index is rebuilt
        }
      }
      continue;
    }
    // KRaft snapshots are written once under their final name.
    if (ends_with(f.name, ".checkpoint") && f.name != "leader-epoch-checkpoint")
      link_file(src + "/" + f.name, dst + "/" + f.name, st);
    else
      copy_one(src + "/" + f.name, dst + "/" + f.name, st);
  }
  pos.bytes = 0;
  for (const auto& f : entries(dst)) pos.bytes += size_of(dst + "/" + f.name);
  return pos;
}

}  // namespace

std::map<std::string, std::string> parse_properties(const std::string& text) {
  std::map<std::string, std::string> out;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = text.find('\n', i);
    if (j == std::string::npos) j = text.size();
    std::string line = text.substr(i, j - i);
    i = j + 1;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
    size_t k = line.find_first_not_of(" \t");
    if (k == std::string::npos || line[k] == '#' || line[k] == '!') continue;
    line = line.substr(k);
    size_t eq = line.find_first_of("=:");
    if (eq == std::string::npos) continue;
    std::string key = line.substr(0, eq), value = line.substr(eq + 1);
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
    size_t v = value.find_first_not_of(" \t");
    out[key] = v == std::string::npos ? "" : value.substr(v);
  }
  return out;
}

std::optional<MetaProperties> read_meta_properties(const std::string& log_dir) {
  const std::string path = log_dir + "/meta.properties";
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  MetaProperties m;
  m.props = parse_properties(text_of(path));
  auto get = [&](const char* k) {
    auto it = m.props.find(k);
    return it == m.props.end() ? std::string() : it->second;
  };
  m.cluster_id = get("cluster.id");
  m.node_id = get("node.id");
  if (m.node_id.empty()) m.node_id = get("broker.id");
  if (get("version").empty()) throw Error(Errc::corrupt, "'" + path + "' has no 'version': it is not a Kafka meta.properties");
  return m;
}

std::map<std::string, int64_t> read_offset_checkpoint(const std::string& path) {
  std::map<std::string, int64_t> out;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return out;
  std::string text = text_of(path);
  // A broker creates its checkpoint files empty at start and writes them later.
  if (text.empty()) return out;
  std::vector<std::string> lines;
  for (size_t i = 0; i < text.size();) {
    size_t j = text.find('\n', i);
    if (j == std::string::npos) j = text.size();
    lines.push_back(text.substr(i, j - i));
    i = j + 1;
  }
  auto bad = [&](size_t line, const std::string& why) {
    return Error(Errc::corrupt, "'" + path + "' line " + std::to_string(line) + ": " + why);
  };
  if (lines.size() < 2 || lines[0] != "0") throw bad(1, "not an offset checkpoint of version 0");
  if (!all_digits(lines[1])) throw bad(2, "the entry count is not a number");
  size_t n = std::stoull(lines[1]);
  if (n > lines.size() - 2) throw bad(2, "declares " + lines[1] + " entries, the file holds fewer");
  for (size_t i = 0; i < n; ++i) {
    const std::string& l = lines[i + 2];
    size_t a = l.rfind(' ');
    size_t b = a == std::string::npos || a == 0 ? std::string::npos : l.rfind(' ', a - 1);
    if (b == std::string::npos || b == 0) throw bad(i + 3, "not '<topic> <partition> <offset>'");
    std::string topic = l.substr(0, b), part = l.substr(b + 1, a - b - 1), off = l.substr(a + 1);
    bool neg = !off.empty() && off[0] == '-';
    if (!all_digits(part) || !all_digits(neg ? off.substr(1) : off) || part.size() > 9 || off.size() > 19)
      throw bad(i + 3, "not '<topic> <partition> <offset>'");
    out[topic + "-" + part] = std::stoll(off);
  }
  return out;
}

bool is_partition_dir_name(const std::string& name) {
  size_t dash = name.rfind('-');
  if (dash == std::string::npos || dash == 0 || dash + 1 >= name.size()) return false;
  std::string_view part = std::string_view(name).substr(dash + 1);
  return all_digits(part) && part.size() <= 9 && name[0] != '.';
}

bool skipped(const std::string& name, bool is_dir) {
  if (is_dir)
    return ends_with(name, "-delete") || ends_with(name, "-future") || ends_with(name, "-stray") || name == "remote-log-index-cache";
  return name == ".lock" || name == ".kafka_cleanshutdown" || ends_with(name, ".deleted") || ends_with(name, ".cleaned") ||
         ends_with(name, ".swap") || ends_with(name, ".part") || ends_with(name, ".tmp");
}

SegmentEnd scan_segment(const std::string& path, uint64_t base_offset) {
  SegmentEnd end;
  end.next_offset = base_offset;
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) throw_errno("cannot open", path, errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno("cannot stat", path, errno);
  const uint64_t size = uint64_t(st.st_size);
  uint8_t h[27];
  uint64_t pos = 0;
  while (pos + 17 <= size) {
    size_t want = size_t(std::min<uint64_t>(sizeof h, size - pos));
    pread_all(fd.get(), h, want, pos, path);
    auto be32 = [&](int at) { return uint32_t(h[at]) << 24 | uint32_t(h[at + 1]) << 16 | uint32_t(h[at + 2]) << 8 | h[at + 3]; };
    uint64_t offset = uint64_t(be32(0)) << 32 | be32(4);
    uint32_t len = be32(8);
    uint8_t magic = h[16];
    if (len < 14 || magic > 2 || (magic == 2 && (len < 49 || want < 27)) || pos + 12 + len > size) break;
    // v2: the batch's last offset is base + lastOffsetDelta; v0/v1 entries
    // carry the offset of their (last, for a compressed wrapper) message.
    uint64_t last = magic == 2 ? offset + be32(23) : offset;
    end.next_offset = last + 1;
    pos += 12 + uint64_t(len);
    end.batches++;
  }
  end.valid_bytes = pos;
  end.torn = pos != size;
  return end;
}

Staged stage(const StageSpec& spec) {
  Staged st;
  make_dir(spec.staging, spec.log_dir);
  struct Guard {
    std::string dir;
    bool armed = true;
    ~Guard() {
      if (armed) remove_tree(dir);
    }
  } guard{spec.staging};

  // 1. The checkpoints before anything they describe.
  const std::vector<std::string> first = {kRecoveryCheckpoint, kHighWatermarkCheckpoint, kLogStartCheckpoint,
                                          kCleanerCheckpoint,  "meta.properties",        "bootstrap.checkpoint"};
  auto root = entries(spec.log_dir);
  auto copy_root = [&](const std::string& name) {
    try {
      copy_one(spec.log_dir + "/" + name, spec.staging + "/" + name, st);
    } catch (const Vanished&) {
      // replaced by the broker between listing and copying: read again
      copy_one(spec.log_dir + "/" + name, spec.staging + "/" + name, st);
    }
  };
  for (const auto& name : first)
    if (std::any_of(root.begin(), root.end(), [&](const Entry& e) { return e.reg && e.name == name; })) copy_root(name);
  for (const auto& e : root)
    if (e.reg && !skipped(e.name, false) && std::find(first.begin(), first.end(), e.name) == first.end()) copy_root(e.name);
  st.meta = read_meta_properties(spec.staging);
  const auto hw = read_offset_checkpoint(spec.staging + "/" + kHighWatermarkCheckpoint);
  const auto rp = read_offset_checkpoint(spec.staging + "/" + kRecoveryCheckpoint);
  const auto ls = read_offset_checkpoint(spec.staging + "/" + kLogStartCheckpoint);

  // 2. The partitions.
  for (const auto& e : root) {
    if (!e.dir) continue;
    if (skipped(e.name, true)) continue;
    if (!is_partition_dir_name(e.name)) {
      st.skipped_dirs.push_back(e.name);
      continue;
    }
    const std::string src = spec.log_dir + "/" + e.name, dst = spec.staging + "/" + e.name;
    for (int attempt = 1;; ++attempt) {
      Staged part;
      try {
        auto pos = stage_partition(src, dst, e.name, hw, rp, ls, spec.offline, part);
        st.partitions[e.name] = pos;
        st.files_linked += part.files_linked;
        st.files_copied += part.files_copied;
        st.bytes += part.bytes;
        break;
      } catch (const Vanished& v) {
        remove_tree(dst);
        struct stat s {};
        if (::stat(src.c_str(), &s) != 0) {
          st.notes.push_back("partition '" + e.name + "' was deleted while the backup read it; it is not in the snapshot");
          break;
        }
        if (attempt == 3)
          throw Error(Errc::io, "partition '" + e.name + "' kept changing while it was linked ('" + v.path +
                                    "' vanished three times): retention or compaction runs too often to take it; try again");
      }
    }
  }
  guard.armed = false;
  return st;
}

std::string swap_in(const std::string& restored, const std::string& log_dir, const std::string& stamp) {
  struct stat st {};
  std::string old;
  if (::lstat(log_dir.c_str(), &st) == 0) {
    old = log_dir + ".cairn-old-" + stamp;
    if (::rename(log_dir.c_str(), old.c_str()) != 0) throw_errno("cannot move the log dir aside to '" + old + "':", log_dir, errno);
  }
  if (::rename(restored.c_str(), log_dir.c_str()) != 0) {
    int e = errno;
    if (!old.empty()) (void)::rename(old.c_str(), log_dir.c_str());
    throw_errno("cannot move the restored log dir '" + restored + "' to", log_dir, e);
  }
  fsync_dir(std::filesystem::path(log_dir).parent_path().string());
  return old;
}

std::string swap_back(const std::string& log_dir, const std::string& old, const std::string& stamp) {
  std::string aside;
  struct stat st {};
  // A swap that was planned but never made (its record is written first):
  // the log dir in place is the one the broker had.
  if (!old.empty() && ::lstat(old.c_str(), &st) != 0) return aside;
  if (::lstat(log_dir.c_str(), &st) == 0) {
    aside = log_dir + ".cairn-failed-" + stamp;
    if (::rename(log_dir.c_str(), aside.c_str()) != 0)
      throw_errno("cannot set the restored log dir aside as '" + aside + "':", log_dir, errno);
  }
  if (!old.empty() && ::rename(old.c_str(), log_dir.c_str()) != 0) throw_errno("cannot put '" + old + "' back as", log_dir, errno);
  fsync_dir(std::filesystem::path(log_dir).parent_path().string());
  return aside;
}

}  // namespace cairn::agent::kafka
