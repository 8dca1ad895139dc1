// CPU and memory limits of this process (cpus.h).
#include "common/util/cpus.h"

#include <sched.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

namespace cairn {
namespace {

std::optional<std::string> slurp(const std::string& path) {
  std::ifstream f(path);
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::optional<int64_t> parse_int(const std::string& s) {
  try {
    size_t used = 0;
    long long v = std::stoll(s, &used);
    if (used != s.size()) return std::nullopt;
    return v;
  } catch (...) {
    return std::nullopt;
  }
}

// The cgroup path of a v2 hierarchy ("0::/path") or of the v1 hierarchy that
// has `controller` ("4:cpu,cpuacct:/path"), with the mount directory name.
struct CgroupPath {
  std::string dir;  // under the root: "unified" or "" for v2, "cpu,cpuacct" for v1
  std::string path;
  bool v2 = false;
};

std::vector<CgroupPath> paths_for(std::string_view proc_cgroup, const std::string& root, const std::string& controller) {
  std::vector<CgroupPath> out;
  std::istringstream in{std::string(proc_cgroup)};
  std::string line;
  while (std::getline(in, line)) {
    auto a = line.find(':');
    auto b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    std::string ctrls = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (ctrls.empty()) {
      // v2: mounted at the root, or at root/unified beside v1 hierarchies (hybrid)
      bool at_root = slurp(root + "/cgroup.controllers").has_value();
      out.push_back({at_root ? "" : "unified", path, true});
      continue;
    }
    std::istringstream cs(ctrls);
    std::string c;
    while (std::getline(cs, c, ','))
      if (c == controller) out.push_back({ctrls, path, false});
  }
  return out;
}

// Each directory from the process's cgroup up to the hierarchy's root.
std::vector<std::string> levels(const std::string& root, const CgroupPath& p) {
  std::string base = root + (p.dir.empty() ? "" : "/" + p.dir);
  std::vector<std::string> out;
  std::string path = p.path;
  while (!path.empty() && path.back() == '/') path.pop_back();
  for (;;) {
    out.push_back(base + path);
    if (path.empty()) break;
    auto slash = path.rfind('/');
    path = slash == std::string::npos ? "" : path.substr(0, slash);
  }
  return out;
}

}  // namespace

std::optional<double> parse_cpu_max(std::string_view text) {
  std::istringstream in{trim(std::string(text))};
  std::string quota, period;
  if (!(in >> quota)) return std::nullopt;
  if (!(in >> period)) period = "100000";
  if (quota == "max") return std::nullopt;
  auto q = parse_int(quota), p = parse_int(period);
  if (!q || !p || *q <= 0 || *p <= 0) return std::nullopt;
  return double(*q) / double(*p);
}

std::optional<double> cgroup_cpu_quota(std::string_view proc_cgroup, const std::string& root) {
  std::optional<double> best;
  auto lower = [&](std::optional<double> v) {
    if (v && (!best || *v < *best)) best = v;
  };
  for (const auto& p : paths_for(proc_cgroup, root, "cpu")) {
    for (const auto& dir : levels(root, p)) {
      if (p.v2) {
        if (auto t = slurp(dir + "/cpu.max")) lower(parse_cpu_max(*t));
      } else {
        auto q = slurp(dir + "/cpu.cfs_quota_us"), per = slurp(dir + "/cpu.cfs_period_us");
        if (q && per) {
          auto qv = parse_int(trim(*q)), pv = parse_int(trim(*per));
          if (qv && pv && *qv > 0 && *pv > 0) lower(double(*qv) / double(*pv));
        }
      }
    }
  }
  return best;
}

std::optional<uint64_t> cgroup_memory_limit(std::string_view proc_cgroup, const std::string& root) {
  std::optional<uint64_t> best;
  for (const auto& p : paths_for(proc_cgroup, root, "memory")) {
    for (const auto& dir : levels(root, p)) {
      auto t = slurp(dir + (p.v2 ? "/memory.max" : "/memory.limit_in_bytes"));
      if (!t) continue;
      std::string v = trim(*t);
      if (v == "max") continue;
      auto n = parse_int(v);
      // v1 writes "no limit" as a huge page-rounded number
      if (!n || *n <= 0 || *n >= (int64_t(1) << 60)) continue;
      if (!best || uint64_t(*n) < *best) best = uint64_t(*n);
    }
  }
  return best;
}

std::string CpuLimit::describe() const {
  char buf[128];
  if (quota)
    std::snprintf(buf, sizeof buf, "%u (affinity %u, cgroup quota %.2f CPUs)", usable, affinity, *quota);
  else
    std::snprintf(buf, sizeof buf, "%u (affinity %u, no cgroup quota)", usable, affinity);
  return buf;
}

const CpuLimit& cpu_limit() {
  static const CpuLimit limit = [] {
    CpuLimit l;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) == 0)
      l.affinity = unsigned(std::max(1, CPU_COUNT(&set)));
    else
      l.affinity = std::max(1u, std::thread::hardware_concurrency());
    if (auto cg = slurp("/proc/self/cgroup")) l.quota = cgroup_cpu_quota(*cg, "/sys/fs/cgroup");
    l.usable = l.affinity;
    if (l.quota) l.usable = std::min<unsigned>(l.usable, unsigned(std::max(1.0, std::ceil(*l.quota - 1e-9))));
    l.usable = std::max(1u, l.usable);
    return l;
  }();
  return limit;
}

std::optional<uint64_t> cgroup_memory_limit() {
  auto cg = slurp("/proc/self/cgroup");
  return cg ? cgroup_memory_limit(*cg, "/sys/fs/cgroup") : std::nullopt;
}

}  // namespace cairn
