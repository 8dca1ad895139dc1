#include "controller/catalog/sqlite.h"

#include <sqlite3.h>

#include <map>
#include <vector>

#include "common/util/error.h"

namespace cairn::catalog::sqlite {

void Db::Closer::operator()(sqlite3* db) const { sqlite3_close_v2(db); }
void Stmt::Finalizer::operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }

// Compiled statements of one connection by their SQL text. Bounded: a few
// copies of each text (nested uses of one query), and a few hundred texts (the
// catalog has fewer; a text built at run time must not grow it without end).
struct StmtCache {
  static constexpr size_t kPerText = 4, kTotal = 512;
  std::map<std::string, std::vector<sqlite3_stmt*>, std::less<>> free;
  size_t count = 0;

  sqlite3_stmt* take(std::string_view sql) {
    auto it = free.find(sql);
    if (it == free.end() || it->second.empty()) return nullptr;
    sqlite3_stmt* s = it->second.back();
    it->second.pop_back();
    --count;
    return s;
  }
  // False when full: the caller finalizes it.
  bool put(sqlite3_stmt* s) {
    const char* sql = sqlite3_sql(s);
    if (!sql || count >= kTotal) return false;
    auto& v = free[sql];
    if (v.size() >= kPerText) return false;
    v.push_back(s);
    ++count;
    return true;
  }
  ~StmtCache() {
    for (auto& [sql, v] : free)
      for (sqlite3_stmt* s : v) sqlite3_finalize(s);
  }
};

Db::Db(std::unique_ptr<sqlite3, Closer> db, std::string path)
    : db_(std::move(db)), path_(std::move(path)), cache_(std::make_shared<StmtCache>()) {}

Stmt::~Stmt() {
  if (!stmt_ || !cache_) return;
  sqlite3_reset(stmt_.get());
  sqlite3_clear_bindings(stmt_.get());
  if (cache_->put(stmt_.get())) (void)stmt_.release();
}

void Db::fail(int rc, std::string_view what) const {
  const char* msg = db_ ? sqlite3_errmsg(db_.get()) : sqlite3_errstr(rc);
  std::string text = "catalog '" + path_ + "': " + std::string(what) + ": " + msg;
  Errc code = Errc::io;
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      code = Errc::locked;
      text += " (another process holds the catalog; is a second controller running?)";
      break;
    case SQLITE_FULL:
      code = Errc::no_space;
      break;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      code = Errc::corrupt;
      break;
    case SQLITE_CONSTRAINT:
      code = Errc::invalid_input;
      break;
    default:
      break;
  }
  throw Error(code, text);
}

Db Db::open(const std::string& path, int busy_timeout_ms) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  Db db(std::unique_ptr<sqlite3, Closer>(raw), path);
  if (rc != SQLITE_OK) db.fail(rc, "cannot open");
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, busy_timeout_ms);
  // WAL lets readers (operator API, metrics) run beside the writer.
  // synchronous=FULL: a committed state change and its audit event must
  // survive a power cut, not just a crash.
  // cache_size 16 MiB (SQLite's default is 2 MiB), allocated as pages are
  // used: a backup set over 10,000 agents writes ~10,000 task, plan and lock
  // rows and ~30,000 audit events in one transaction; in 2 MiB those pages
  // were spilled to the WAL and read back mid-transaction, which doubled the
  // time of marking the plans sent and recording their acknowledgements.
  db.exec("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA cache_size = -16384;");
  auto mode = db.prepare("PRAGMA journal_mode = WAL");
  if (!mode.step() || mode.text(0) != "wal")
    throw Error(Errc::unsupported, "catalog '" + path + "': cannot switch to wal mode (is it on a network filesystem?)");
  return db;
}

void Db::exec(std::string_view sql) {
  std::string s(sql);
  char* err = nullptr;
  int rc = sqlite3_exec(db_.get(), s.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    // Keep the code's meaning (busy, full, constraint) but SQLite's own text.
    try {
      fail(rc, "cannot execute");
    } catch (const Error& e) {
      throw Error(e.code(), "catalog '" + path_ + "': " + msg);
    }
  }
}

Stmt Db::prepare(std::string_view sql) {
  if (sqlite3_stmt* cached = cache_->take(sql)) return Stmt(this, cached, cache_);
  sqlite3_stmt* s = nullptr;
  const char* tail = nullptr;
  int rc = sqlite3_prepare_v3(db_.get(), sql.data(), int(sql.size()), SQLITE_PREPARE_PERSISTENT, &s, &tail);
  if (rc != SQLITE_OK) fail(rc, "cannot prepare '" + std::string(sql.substr(0, 60)) + "'");
  // Cached under the text it was asked for (sqlite3_sql gives back exactly the
  // statement's text): a text with more after the statement is not cached.
  bool whole = tail == sql.data() + sql.size() && sqlite3_sql(s) && std::string_view(sqlite3_sql(s)) == sql;
  return Stmt(this, s, whole ? cache_ : nullptr);
}

bool Db::in_transaction() const { return sqlite3_get_autocommit(db_.get()) == 0; }
int64_t Db::changes() const { return sqlite3_changes64(db_.get()); }

Stmt& Stmt::bind(int i, int64_t v) {
  int rc = sqlite3_bind_int64(stmt_.get(), i, v);
  if (rc != SQLITE_OK) db_->fail(rc, "cannot bind");
  return *this;
}

Stmt& Stmt::bind(int i, std::string_view v) {
  int rc = sqlite3_bind_text(stmt_.get(), i, v.data(), int(v.size()), SQLITE_TRANSIENT);
  if (rc != SQLITE_OK) db_->fail(rc, "cannot bind");
  return *this;
}

Stmt& Stmt::bind(int i, std::span<const uint8_t> v) {
  // A zero-length blob is still a blob, not NULL: pass a non-null pointer.
  static const uint8_t empty = 0;
  int rc = sqlite3_bind_blob(stmt_.get(), i, v.empty() ? &empty : v.data(), int(v.size()), SQLITE_TRANSIENT);
  if (rc != SQLITE_OK) db_->fail(rc, "cannot bind");
  return *this;
}

Stmt& Stmt::bind_null(int i) {
  int rc = sqlite3_bind_null(stmt_.get(), i);
  if (rc != SQLITE_OK) db_->fail(rc, "cannot bind");
  return *this;
}

bool Stmt::step() {
  int rc = sqlite3_step(stmt_.get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  db_->fail(rc, "cannot run '" + std::string(sqlite3_sql(stmt_.get())).substr(0, 60) + "'");
}

void Stmt::run() {
  while (step()) {
  }
}

void Stmt::reset() {
  sqlite3_reset(stmt_.get());
  sqlite3_clear_bindings(stmt_.get());
}

bool Stmt::is_null(int c) const { return sqlite3_column_type(stmt_.get(), c) == SQLITE_NULL; }
int64_t Stmt::integer(int c) const { return sqlite3_column_int64(stmt_.get(), c); }

std::string Stmt::text(int c) const {
  const auto* p = sqlite3_column_text(stmt_.get(), c);
  int n = sqlite3_column_bytes(stmt_.get(), c);
  return p ? std::string(reinterpret_cast<const char*>(p), size_t(n)) : std::string();
}

Bytes Stmt::blob(int c) const {
  const auto* p = static_cast<const uint8_t*>(sqlite3_column_blob(stmt_.get(), c));
  int n = sqlite3_column_bytes(stmt_.get(), c);
  return p ? Bytes(p, p + n) : Bytes();
}

}  // namespace cairn::catalog::sqlite
