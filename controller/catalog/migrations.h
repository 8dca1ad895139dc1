#pragma once
// Numbered schema migrations. The SQL lives in migrations/NNNN_name.sql and is
// compiled into the binary (see CMakeLists.txt), so a controller never runs
// against SQL files that differ from the ones it was built with.
#include <span>
#include <string_view>

namespace cairn::catalog {

namespace sqlite {
class Db;
}

struct Migration {
  int version;
  std::string_view name;
  std::string_view sql;
};

// Every migration of this build, in file-name order (generated).
std::span<const Migration> embedded_migrations();

// Throws cairn::Error(invalid_input) unless versions run 1, 2, 3... without a
// gap or a repeat: a build with a bad list must not touch a catalog.
void check_migration_list(std::span<const Migration> migrations);

// Brings the database to the newest version, each migration in its own
// transaction together with its schema_version row. Refuses a catalog that is
// newer than this build, or whose applied migration differs from this build's
// (by SHA-256 of the SQL). Returns the resulting version.
int migrate(sqlite::Db& db, std::span<const Migration> migrations, int64_t now);

}  // namespace cairn::catalog
