#include "common/repo/snapshot.h"

#include <algorithm>
#include <ctime>

#include "common/repo/limits.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/terminal_text.h"

namespace cairn::repo {

using nlohmann::json;

int64_t parse_rfc3339(const std::string& s) {
  std::tm tm{};
  if (!strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm)) return 0;
  return int64_t(timegm(&tm));
}

std::string format_rfc3339(int64_t unix_s) {
  time_t t = time_t(unix_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json encode_snapshot(const Snapshot& s) {
  json errs = json::array();
  // A path is bytes: one that is not UTF-8 goes in path_b64 (a JSON string
  // must be UTF-8; dumping it would throw and lose the whole snapshot).
  for (const auto& e : s.errors) {
    json je = {{"reason", utf8_or_escaped(e.reason)}};
    if (utf8_valid(e.path))
      je["path"] = e.path;
    else
      je["path_b64"] = to_base64(as_bytes(e.path));
    errs.push_back(std::move(je));
  }
  json j = {{"version", kFormatVersion}, {"time", s.time},       {"hostname", s.hostname},
            {"username", s.username},    {"paths", s.paths},     {"tags", s.tags},
            {"tree", id_hex(s.tree)},    {"partial", s.partial}, {"errors", errs},
            {"summary", s.summary},      {"program", s.program}};
  if (!s.parent.empty()) j["parent"] = s.parent;
  if (s.component.is_object()) j["component"] = s.component;
  return j;
}

Snapshot decode_snapshot(const json& j, const std::string& id) {
  Snapshot s;
  s.id = id;
  try {
    if (j.value("version", 0) != kFormatVersion) throw Error(Errc::unsupported, "snapshot '" + id + "' has an unknown version");
    s.time = j.at("time").get<std::string>();
    s.time_unix = parse_rfc3339(s.time);
    s.hostname = j.value("hostname", "");
    s.username = j.value("username", "");
    s.paths = j.at("paths").get<std::vector<std::string>>();
    s.tags = j.value("tags", std::vector<std::string>{});
    if (!parse_id(j.at("tree").get<std::string>(), s.tree)) throw Error(Errc::corrupt, "snapshot '" + id + "': malformed tree id");
    s.parent = j.value("parent", "");
    s.partial = j.value("partial", false);
    for (const auto& e : j.value("errors", json::array())) {
      std::string path = e.value("path", "");
      Bytes raw;
      if (e.contains("path_b64") && from_base64(e.at("path_b64").get<std::string>(), raw)) path.assign(raw.begin(), raw.end());
      s.errors.push_back({path, e.value("reason", "")});
    }
    s.summary = j.value("summary", json::object());
    s.program = j.value("program", "");
    // A driver's metadata: an object, or absent (files, cairnctl repo backup).
    if (j.contains("component") && j.at("component").is_object()) s.component = j.at("component");
  } catch (const json::exception& e) {
    throw Error(Errc::corrupt, "snapshot '" + id + "' is malformed: " + e.what());
  }
  return s;
}

std::string save_snapshot(Repository& r, Snapshot& s) {
  // A backup of millions of unreadable files must still write a snapshot readers accept.
  if (s.errors.size() > kMaxSnapshotErrors) {
    s.summary["errors_not_listed"] = s.errors.size() - kMaxSnapshotErrors;
    s.errors.resize(kMaxSnapshotErrors);
  }
  s.id = r.save_json(FileType::snapshot, encode_snapshot(s));
  return s.id;
}

std::map<std::string, std::string> tag_values(const Snapshot& s) {
  std::map<std::string, std::string> out;
  for (const auto& t : s.tags)
    if (auto c = t.find(':'); c != std::string::npos) out.emplace(t.substr(0, c), t.substr(c + 1));
  return out;
}

Snapshot load_snapshot(Repository& r, const std::string& id) { return decode_snapshot(r.load_json(FileType::snapshot, id), id); }

std::vector<Snapshot> load_snapshots(Repository& r, std::vector<std::pair<std::string, std::string>>* bad) {
  std::vector<Snapshot> out;
  for (const auto& name : r.list(FileType::snapshot)) {
    try {
      out.push_back(load_snapshot(r, name));
    } catch (const Error& e) {
      if (bad) bad->emplace_back(name, e.what());
    }
  }
  std::sort(out.begin(), out.end(), [](const Snapshot& a, const Snapshot& b) { return a.time < b.time; });
  return out;
}

bool is_snapshot_id(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string resolve_snapshot(Repository& r, const std::string& ref, bool skip_damaged,
                             std::vector<std::pair<std::string, std::string>>* skipped) {
  if (ref == "latest") {
    std::vector<std::pair<std::string, std::string>> bad;
    auto all = load_snapshots(r, &bad);
    if (!bad.empty() && !skip_damaged) {
      std::string list;
      for (const auto& [id, why] : bad) list += (list.empty() ? "" : "; ") + std::string("'") + id.substr(0, 8) + "' (" + why + ")";
      throw Error(Errc::corrupt, std::string(bad.size() == 1 ? "snapshot " : "snapshots ") + list + (bad.size() == 1 ? " is" : " are") +
                                     " damaged, so 'latest' cannot be told: it may be the damaged one. Give a snapshot id (see "
                                     "'cairnctl repo snapshots'), pass --skip-damaged to take the newest readable snapshot, or run "
                                     "'cairnctl repo check'");
    }
    if (skipped) *skipped = bad;
    if (all.empty()) throw Error(Errc::not_found, "the repository has no readable snapshots");
    return all.back().id;
  }
  if (ref.size() < 4) throw Error(Errc::invalid_input, "snapshot id '" + ref + "' is too short (give at least 4 hex digits)");
  std::string found;
  for (const auto& name : r.list(FileType::snapshot)) {
    if (name.compare(0, ref.size(), ref) == 0) {
      if (!found.empty()) throw Error(Errc::invalid_input, "snapshot id '" + ref + "' is ambiguous; give more digits");
      found = name;
    }
  }
  if (found.empty()) throw Error(Errc::not_found, "no snapshot '" + ref + "' in the repository (see 'cairnctl repo snapshots')");
  return found;
}

std::string source_key(const Snapshot& s) {
  std::vector<std::string> p = s.paths;
  std::sort(p.begin(), p.end());
  std::string k = s.hostname;
  for (const auto& x : p) k += '\0' + x;
  return k;
}

}  // namespace cairn::repo
