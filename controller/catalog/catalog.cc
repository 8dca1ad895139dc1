#include "controller/catalog/catalog.h"

#include <sqlite3.h>

#include <chrono>

#include "common/util/error.h"
#include "controller/catalog/migrations.h"
#include "controller/catalog/sqlite.h"

namespace cairn::catalog {

Catalog::Catalog(Catalog&&) noexcept = default;
Catalog& Catalog::operator=(Catalog&&) noexcept = default;
Catalog::~Catalog() = default;

Catalog Catalog::open(const std::string& path, CatalogOptions options) {
  if (!options.clock_ms)
    options.clock_ms = [] {
      using namespace std::chrono;
      return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
    };
  Catalog c;
  c.db_ = std::make_unique<sqlite::Db>(sqlite::Db::open(path, options.busy_timeout_ms));
  c.path_ = path;
  c.schema_version_ = migrate(*c.db_, embedded_migrations(), options.clock_ms() / 1000);
  c.options_ = std::move(options);
  return c;
}

Tx Catalog::make_tx(std::string_view actor) { return Tx(*db_, std::string(actor), options_.clock_ms()); }

Catalog::Scope::Scope(Catalog& c, bool write) : c_(c) {
  if (c_.db_->in_transaction())
    throw Error(Errc::invalid_input, "catalog '" + c_.path_ + "': a transaction is already open on this connection");
  // IMMEDIATE takes the write lock up front, so two writers queue on the busy
  // timeout instead of one failing halfway through.
  c_.db_->exec(write ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED");
}

Catalog::Scope::~Scope() {
  if (!done_) sqlite3_exec(c_.db_->get(), "ROLLBACK", nullptr, nullptr, nullptr);
}

void Catalog::Scope::commit() {
  c_.db_->exec("COMMIT");
  done_ = true;
}

ChainReport Catalog::verify_audit_chain() {
  return read([](const Tx& tx) { return verify_chain(tx.audit_events()); });
}

}  // namespace cairn::catalog
