#include "common/repo/recover.h"

#include <map>

#include "common/crypto/crypto.h"
#include "common/repo/pack.h"
#include "common/util/error.h"

namespace cairn::repo {

std::optional<Handle> handle_of_object(const std::string& object) {
  if (object == "config") return Handle{FileType::config, ""};
  const size_t slash = object.find('/');
  if (slash == std::string::npos) return std::nullopt;
  const std::string dir = object.substr(0, slash), name = object.substr(object.rfind('/') + 1);
  if (name.empty()) return std::nullopt;
  for (FileType t : {FileType::key, FileType::pack, FileType::index, FileType::snapshot, FileType::set_record})
    if (dir == file_type_name(t)) return Handle{t, name};
  return std::nullopt;
}

namespace {
bool whole(const Handle& h, const Bytes& b) {
  if (h.type == FileType::pack) return id_hex(pack_id(b)) == h.name;
  return to_hex(crypto::sha256(b)) == h.name;
}
}  // namespace

std::optional<Recovery> find_recovery(Repository& r, const Handle& h) {
  if (h.type == FileType::config) return std::nullopt;  // only as the open found it (earlier_versions_used)
  std::vector<ObjectVersion> vs;
  try {
    vs = r.backend().versions(h);
  } catch (const Error&) {
    return std::nullopt;
  }
  for (const auto& v : vs) {
    if (v.marker || v.latest) continue;
    try {
      if (whole(h, r.backend().load_version(h, v.version))) return Recovery{h, object_path(h), v.version, v.modified};
    } catch (const Error&) {
    }
  }
  return std::nullopt;
}

std::vector<Recovery> find_recoveries(Repository& r, CheckReport& report) {
  std::vector<Recovery> out;
  std::map<std::string, std::string> seen;  // object -> its whole earlier version ("" when none)
  for (auto& p : report.problems) {
    // Any error about one stored object (damaged, missing, truncated, a blob in it that fails), and
    // damaged key slots (a warning while another slot opens).
    if (p.severity != Severity::error && p.kind != "key_slot") continue;
    auto h = handle_of_object(p.object);
    if (!h) continue;
    if (auto it = seen.find(p.object); it != seen.end()) {
      p.recoverable_version = it->second;
      continue;
    }
    if (!p.recoverable_version.empty()) {  // the open already read it
      seen[p.object] = p.recoverable_version;
      out.push_back(Recovery{*h, p.object, p.recoverable_version, {}});
      continue;
    }
    auto rc = find_recovery(r, *h);
    seen[p.object] = rc ? rc->version : std::string();
    if (rc) {
      p.recoverable_version = rc->version;
      p.message += "; the store keeps a whole earlier version (" + rc->version + (rc->modified.empty() ? "" : ", " + rc->modified) +
                   "): 'cairnctl repo check --recover' puts it back";
      out.push_back(std::move(*rc));
    }
  }
  return out;
}

void apply_recovery(Repository& r, const Recovery& rc) {
  Bytes b = r.backend().load_version(rc.handle, rc.version);
  if (rc.handle.type != FileType::config && !whole(rc.handle, b))
    throw Error(Errc::corrupt, "version " + rc.version + " of '" + rc.object + "' changed since it was checked; nothing was written");
  r.backend().replace(rc.handle, b);
}

}  // namespace cairn::repo
