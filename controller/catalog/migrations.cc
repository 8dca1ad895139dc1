#include "controller/catalog/migrations.h"

#include "common/crypto/crypto.h"
#include "common/util/error.h"
#include "controller/catalog/sqlite.h"

namespace cairn::catalog {
namespace {

std::string sql_digest(std::string_view sql) { return to_hex(crypto::sha256(as_bytes(sql))); }

}  // namespace

void check_migration_list(std::span<const Migration> migrations) {
  int expect = 1;
  for (const auto& m : migrations) {
    if (m.version != expect)
      throw Error(Errc::invalid_input, "migration '" + std::string(m.name) + "' has number " + std::to_string(m.version) + " where " +
                                           std::to_string(expect) + " was expected; migrations are numbered 0001, 0002, ... without gaps");
    ++expect;
  }
}

int migrate(sqlite::Db& db, std::span<const Migration> migrations, int64_t now) {
  check_migration_list(migrations);
  db.exec(
      "CREATE TABLE IF NOT EXISTS schema_version ("
      " version INTEGER PRIMARY KEY, name TEXT NOT NULL, sha256 TEXT NOT NULL, applied_at INTEGER NOT NULL)");

  int current = 0;
  {
    auto rows = db.prepare("SELECT version, name, sha256 FROM schema_version ORDER BY version");
    while (rows.step()) {
      int v = int(rows.integer(0));
      if (v > int(migrations.size()))
        throw Error(Errc::unsupported, "catalog '" + db.path() + "' has schema version " + std::to_string(v) +
                                           " but this build knows up to " + std::to_string(migrations.size()) +
                                           "; run a newer cairn-controller");
      const Migration& m = migrations[size_t(v - 1)];
      if (rows.text(2) != sql_digest(m.sql))
        throw Error(Errc::unsupported, "catalog '" + db.path() + "' applied a different migration " + std::to_string(v) + " '" +
                                           rows.text(1) + "' than this build's '" + std::string(m.name) +
                                           "'; released migrations must never change");
      current = v;
    }
  }

  for (const auto& m : migrations) {
    if (m.version <= current) continue;
    db.exec("BEGIN IMMEDIATE");
    try {
      db.exec(m.sql);
      db.prepare("INSERT INTO schema_version (version, name, sha256, applied_at) VALUES (?, ?, ?, ?)")
          .bind_all(int64_t(m.version), m.name, sql_digest(m.sql), now)
          .run();
      db.exec("COMMIT");
    } catch (...) {
      db.exec("ROLLBACK");
      throw;
    }
    current = m.version;
  }
  return current;
}

}  // namespace cairn::catalog
