#pragma once
// Settings of the postgresql driver, as declared in a [[component]] table
// (docs/configuration.md § postgresql, docs/postgresql.md):
//   data_dir = "/var/lib/postgresql/15/main"      (required: the server's data_directory)
//   host = "/var/run/postgresql"  port = 5432      (a socket directory or a host name)
//   user = "postgres"  dbname = "postgres"         (a superuser, or a role with pg_backup_start rights)
//   password_file = "/etc/cairn/pg.password"       (optional, mode 0600)
//   passfile = "/root/.pgpass"                     (optional, libpq's .pgpass, mode 0600)
//   sslmode = "verify-full"                        (optional; libpq's default otherwise)
//   archive_socket = "/run/cairn-agent/postgresql-main.sock"   (optional; where archive_command hands WAL over)
//   archive_check_seconds = 600                    (optional; how often the agent checks the archive for gaps)
//   service = "postgresql@15-main.service"         (required for restores; see service_settings.h)
//   dump_dir = "/var/lib/postgresql/cairn-dump"    (logical mode's scratch space; default <data_dir>.cairn-dump)
//   bin_dir = "/usr/lib/postgresql/15/bin"         (pg_dump, pg_dumpall, pg_restore, psql)
//   logical_restore_as = { shop = "shop_restored" }  (optional: a logical dump's
//     databases restored under other names, beside the live ones, by a restore
//     to the target restore_to_name, default "alternate")
#include <map>
#include <memory>
#include <string>

#include "agent/config_reader.h"
#include "agent/driver.h"
#include "agent/drivers/postgresql/conn.h"
#include "agent/platform/service.h"

namespace cairn::agent::postgresql {

struct Settings {
  std::string data_dir;  // absolute, no trailing '/'
  ConnSettings conn;
  std::string archive_socket;  // absolute
  int64_t archive_check_seconds = 600;
  // Logical mode: where pg_dump writes before the dumps are stored (removed
  // after each backup); the client programs' directory.
  std::string dump_dir;
  std::string bin_dir = "/usr/lib/postgresql/15/bin";
  platform::ServiceDecl service;
  // A restore to the target restore_to_name (`cairnctl restore --target`) of
  // a logical dump: each database named here restored as a new database of
  // the name it maps to; the others, and roles, left alone.
  std::map<std::string, std::string> logical_restore_as;
  std::string restore_to_name = "alternate";
};

Settings parse_settings(TableReader& r, const std::string& component);
std::unique_ptr<Driver> make_driver(TableReader& settings, const std::string& component);

}  // namespace cairn::agent::postgresql
