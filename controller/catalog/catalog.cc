#include "controller/catalog/catalog.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "common/util/error.h"
#include "controller/catalog/migrations.h"
#include "controller/catalog/sqlite.h"

namespace cairn::catalog {

Catalog::Catalog(Catalog&&) noexcept = default;
Catalog& Catalog::operator=(Catalog&&) noexcept = default;
Catalog::~Catalog() = default;

namespace {

// The catalog holds key material and the audit trail: owner-only. SQLite
// creates its files 0644 (less the umask) and gives -wal and -shm the mode of
// the main file, so the main file is created 0600 first, and an existing one
// (and its -wal/-shm) is tightened.
//
// Only a missing file is opened (to create it): closing any descriptor of a
// file drops every POSIX lock this process holds on it, so opening and closing
// the catalog beside a live connection (the controller's audit publisher opens
// its own) would drop that connection's locks, and the next process to close
// the database would checkpoint and delete the -wal and -shm under it: its
// commits would go to a deleted file, invisible to everyone else.
void make_private(const std::string& path) {
  if (path.empty() || path == ":memory:" || path.rfind("file:", 0) == 0) return;
  struct stat existing {};
  if (::lstat(path.c_str(), &existing) != 0) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 && errno != EEXIST) throw Error(Errc::io, "catalog '" + path + "': cannot create: " + std::strerror(errno));
    if (fd >= 0) ::close(fd);  // nobody has it open: it did not exist
  }
  for (const std::string& p : {path, path + "-wal", path + "-shm"}) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0 || (st.st_mode & 077) == 0) continue;
    if (::chmod(p.c_str(), st.st_mode & 0600) != 0)
      throw Error(Errc::io, "catalog file '" + p + "' is readable by group or others and cannot be made private: " + std::strerror(errno) +
                                "; run 'chmod 0600 " + p + "' as its owner");
  }
}

}  // namespace

Catalog Catalog::open(const std::string& path, CatalogOptions options) {
  make_private(path);
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

Tx Catalog::make_tx(std::string_view actor) { return Tx(*db_, std::string(actor), options_.clock_ms(), &on_ended_); }

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

int64_t Catalog::release_memory() {
  if (db_->in_transaction()) return 0;
  int64_t before = sqlite3_memory_used();
  sqlite3_db_release_memory(db_->get());
  return std::max<int64_t>(0, before - sqlite3_memory_used());
}

void Catalog::before_commit(Tx& tx) {
  if (outbox_cap_ <= 0 || !tx.wrote_audit()) return;
  // An upper bound on the unpublished events: what was counted last, plus
  // every event added since (publishing only lowers the true number). Only
  // when it passes the cap are they counted again: with Kafka up, once every
  // `outbox_max_events` events; with Kafka down, once every tenth of it.
  if (outbox_bound_ >= 0 && (outbox_bound_ += tx.audit_written()) <= outbox_cap_) return;
  Tx::Dropped d = tx.cap_audit_outbox(outbox_cap_);
  outbox_bound_ = d.unpublished;
  if (d.count > 0)
    spdlog::error(
        "audit: {} unpublished event(s) lost (seq {}..{}): the outbox reached audit.kafka.outbox_max_events = {} "
        "while Kafka did not take them; an audit.dropped event records the range",
        d.count, d.first, d.last, outbox_cap_);
}

ChainReport Catalog::verify_audit_chain() {
  return read([](const Tx& tx) { return verify_chain(tx.audit_events()); });
}

}  // namespace cairn::catalog
