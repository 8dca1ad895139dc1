#include "agent/drivers/prometheus/tsdb.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>

namespace cairn::agent::prometheus {

namespace fs = std::filesystem;

namespace {
constexpr uintmax_t kMaxMetaBytes = 1 << 20;  // a meta.json is a few hundred bytes
}

nlohmann::json BlockSet::to_json() const {
  nlohmann::json j = {{"blocks", blocks}, {"samples", samples}, {"block_bytes", bytes}};
  if (blocks > 0) {
    j["min_time"] = min_time;
    j["max_time"] = max_time;
  }
  return j;
}

BlockSet read_blocks(const std::string& dir) {
  BlockSet s;
  std::error_code ec;
  s.min_time = std::numeric_limits<int64_t>::max();
  s.max_time = std::numeric_limits<int64_t>::min();
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_directory(ec) || e.is_symlink(ec)) continue;
    fs::path meta = e.path() / "meta.json";
    if (!fs::is_regular_file(meta, ec)) continue;
    std::string name = e.path().filename().string();
    auto size = fs::file_size(meta, ec);
    if (ec || size > kMaxMetaBytes) {
      s.problems.push_back("block '" + name + "': meta.json is unreadable or too large");
      continue;
    }
    std::ifstream in(meta, std::ios::binary);
    auto j = nlohmann::json::parse(in, nullptr, false);
    if (!j.is_object() || !j.contains("minTime") || !j.contains("maxTime") || !j["minTime"].is_number_integer() ||
        !j["maxTime"].is_number_integer()) {
      s.problems.push_back("block '" + name + "': meta.json has no minTime/maxTime");
      continue;
    }
    s.blocks++;
    s.ulids.push_back(name);
    s.min_time = std::min(s.min_time, j["minTime"].get<int64_t>());
    s.max_time = std::max(s.max_time, j["maxTime"].get<int64_t>());
    if (j.contains("stats") && j["stats"].is_object() && j["stats"].contains("numSamples") && j["stats"]["numSamples"].is_number_unsigned())
      s.samples += j["stats"]["numSamples"].get<uint64_t>();
    s.bytes += tree_bytes(e.path().string());
  }
  std::sort(s.ulids.begin(), s.ulids.end());
  if (s.blocks == 0) s.min_time = s.max_time = 0;
  return s;
}

uint64_t tree_bytes(const std::string& dir) {
  uint64_t n = 0;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end; !ec && it != end;
       it.increment(ec)) {
    std::error_code ec2;
    if (it->is_regular_file(ec2) && !it->is_symlink(ec2)) n += it->file_size(ec2);
  }
  return n;
}

}  // namespace cairn::agent::prometheus
