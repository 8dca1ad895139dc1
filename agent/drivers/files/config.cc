#include "agent/drivers/files/config.h"

#include "agent/drivers/files/files_driver.h"
#include "common/util/fs.h"

namespace cairn::agent::files {

Settings parse_settings(TableReader& r) {
  Settings s;
  auto paths = r.string_list("paths");
  if (!paths) throw ConfigError(r.file(), r.line(), r.where() + " (driver 'files') needs 'paths'");
  if (paths->empty()) r.fail("paths", "must name at least one path");
  for (const auto& p : *paths) {
    if (!is_clean_absolute_path(p)) r.fail("paths", "'" + p + "' is not an absolute path without '..'");
    if (p == "/") r.fail("paths", "'/' is the whole machine; declare the directories to back up");
    std::string q = p;
    while (q.size() > 1 && q.back() == '/') q.pop_back();
    s.paths.push_back(q);
  }
  if (auto ex = r.string_list("exclude")) s.excludes = *ex;
  if (auto t = r.string("restore_to")) {
    if (!is_clean_absolute_path(*t) || *t == "/")
      r.fail("restore_to", "'" + *t + "' must be an absolute directory other than '/', without '..'");
    s.restore_to = *t;
    while (s.restore_to.size() > 1 && s.restore_to.back() == '/') s.restore_to.pop_back();
  }
  if (auto n = r.string("restore_to_name")) {
    if (n->empty()) r.fail("restore_to_name", "must not be empty");
    if (s.restore_to.empty()) r.fail("restore_to_name", "names 'restore_to', which is not set");
    s.restore_to_name = *n;
  }
  return s;
}

std::unique_ptr<Driver> make_driver(TableReader& settings, const std::string& component) {
  return std::make_unique<FilesDriver>(component, parse_settings(settings));
}

}  // namespace cairn::agent::files
