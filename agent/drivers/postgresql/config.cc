#include "agent/drivers/postgresql/config.h"

#include <set>

#include "agent/drivers/postgresql/postgresql_driver.h"
#include "agent/drivers/service_settings.h"
#include "common/util/fs.h"

namespace cairn::agent::postgresql {

Settings parse_settings(TableReader& r, const std::string& component) {
  Settings s;
  s.data_dir = r.required_string("data_dir");
  while (s.data_dir.size() > 1 && s.data_dir.back() == '/') s.data_dir.pop_back();
  if (!is_clean_absolute_path(s.data_dir) || s.data_dir == "/")
    r.fail("data_dir", "'" + s.data_dir + "' must be an absolute directory other than '/', without '..' (the server's data_directory)");
  s.conn.host = r.string_or("host", s.conn.host);
  if (s.conn.host.empty()) r.fail("host", "must name a socket directory or a host");
  if (auto p = r.integer("port", 1, 65535)) s.conn.port = int(*p);
  s.conn.user = r.string_or("user", s.conn.user);
  s.conn.dbname = r.string_or("dbname", s.conn.dbname);
  if (auto m = r.string("sslmode")) {
    static const char* modes[] = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"};
    bool known = false;
    for (auto* x : modes) known |= *m == x;
    if (!known) r.fail("sslmode", "'" + *m + "' is not one of disable, allow, prefer, require, verify-ca, verify-full");
    s.conn.sslmode = *m;
  }
  if (auto p = r.string("password_file")) {
    if (!is_clean_absolute_path(*p)) r.fail("password_file", "'" + *p + "' is not an absolute path");
    s.conn.password_file = *p;
  }
  if (auto p = r.string("passfile")) {
    if (!is_clean_absolute_path(*p)) r.fail("passfile", "'" + *p + "' is not an absolute path");
    s.conn.passfile = *p;
  }
  s.archive_socket = r.string_or("archive_socket", "/run/cairn-agent/postgresql-" + component + ".sock");
  if (!is_clean_absolute_path(s.archive_socket)) r.fail("archive_socket", "'" + s.archive_socket + "' is not an absolute path");
  // A unix socket's path is at most 107 bytes (sun_path).
  if (s.archive_socket.size() > 100) r.fail("archive_socket", "'" + s.archive_socket + "' is longer than 100 bytes");
  if (auto n = r.integer("archive_check_seconds", 1, 7 * 86400)) s.archive_check_seconds = *n;
  s.dump_dir = r.string_or("dump_dir", s.data_dir + ".cairn-dump");
  if (!is_clean_absolute_path(s.dump_dir) || s.dump_dir == "/")
    r.fail("dump_dir", "'" + s.dump_dir + "' must be an absolute directory other than '/'");
  if (s.dump_dir == s.data_dir || s.dump_dir.rfind(s.data_dir + "/", 0) == 0) r.fail("dump_dir", "'" + s.dump_dir + "' lies in data_dir");
  s.bin_dir = r.string_or("bin_dir", s.bin_dir);
  if (!is_clean_absolute_path(s.bin_dir)) r.fail("bin_dir", "'" + s.bin_dir + "' is not an absolute path");
  s.service = read_service(r, "service");
  if (const toml::table* t = r.table("logical_restore_as")) {
    TableReader m(*t, r.file(), r.where() + " logical_restore_as");
    std::set<std::string> names;
    for (const auto& [k, v] : *t) {
      std::string from(k.str());
      auto to = m.string(from);
      // PostgreSQL's identifiers: at most 63 bytes (NAMEDATALEN - 1).
      if (!to || to->empty() || to->size() > 63 || to->find('\0') != std::string::npos)
        m.fail(from, "database '" + from + "' must map to a database name of 1-63 bytes");
      if (*to == from) m.fail(from, "maps database '" + from + "' to itself: a restore under another name never overwrites one");
      if (!names.insert(*to).second) m.fail(from, "two databases map to '" + *to + "'");
      s.logical_restore_as[from] = *to;
    }
    m.finish();
    if (s.logical_restore_as.empty()) r.fail("logical_restore_as", "names no database");
  }
  if (auto n = r.string("restore_to_name")) {
    if (n->empty()) r.fail("restore_to_name", "must not be empty");
    if (s.logical_restore_as.empty()) r.fail("restore_to_name", "names 'logical_restore_as', which is not set");
    s.restore_to_name = *n;
  }
  return s;
}

std::unique_ptr<Driver> make_driver(TableReader& settings, const std::string& component) {
  return std::make_unique<PostgresqlDriver>(component, parse_settings(settings, component));
}

}  // namespace cairn::agent::postgresql
