#pragma once
// RAII over the SQLite C API, for the catalog's own use (callers include
// catalog.h). Failures throw cairn::Error naming the catalog file and what
// SQLite said.
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/util/encoding.h"

struct sqlite3;
struct sqlite3_stmt;

namespace cairn::catalog::sqlite {

class Stmt;
struct StmtCache;

class Db {
 public:
  // Opens (creating if needed) and applies the connection settings every
  // catalog connection needs: WAL, foreign keys, busy timeout, full sync.
  static Db open(const std::string& path, int busy_timeout_ms);

  Db(Db&&) noexcept = default;
  Db& operator=(Db&&) noexcept = default;

  // Runs one or more statements that return no rows.
  void exec(std::string_view sql);
  // A statement compiled once per connection: a Stmt that ends goes back to the
  // connection's cache (reset, bindings cleared) and the next prepare() of the
  // same text takes it, so a hot path pays SQLite's parser once, not per call.
  Stmt prepare(std::string_view sql);
  bool in_transaction() const;
  // Rows changed by the last INSERT, UPDATE or DELETE.
  int64_t changes() const;
  const std::string& path() const { return path_; }
  sqlite3* get() const { return db_.get(); }

  // Throws cairn::Error for a non-OK result code rc, naming what was being done.
  [[noreturn]] void fail(int rc, std::string_view what) const;

 private:
  struct Closer {
    void operator()(sqlite3* db) const;
  };
  Db(std::unique_ptr<sqlite3, Closer> db, std::string path);
  std::unique_ptr<sqlite3, Closer> db_;  // closed with sqlite3_close_v2: it waits for the cached statements
  std::string path_;
  std::shared_ptr<StmtCache> cache_;  // shared with the Stmts it lent, which may outlive a moved-from Db
};

class Stmt {
 public:
  ~Stmt();  // back to the connection's cache (finalized when the cache is full)
  Stmt(Stmt&&) noexcept = default;
  Stmt& operator=(Stmt&&) noexcept = default;

  // Parameters are 1-based, as in SQLite.
  Stmt& bind(int i, int64_t v);
  Stmt& bind(int i, std::string_view v);
  Stmt& bind(int i, const char* v) { return bind(i, std::string_view(v)); }
  Stmt& bind(int i, const std::string& v) { return bind(i, std::string_view(v)); }
  Stmt& bind(int i, std::span<const uint8_t> v);
  Stmt& bind_null(int i);
  template <class T>
  Stmt& bind(int i, const std::optional<T>& v) {
    return v ? bind(i, *v) : bind_null(i);
  }
  // Binds every argument in order, starting at parameter 1.
  template <class... A>
  Stmt& bind_all(const A&... a) {
    int i = 0;
    (bind(++i, a), ...);
    return *this;
  }

  // True when a row is ready, false when the statement is done.
  bool step();
  // Steps a statement that returns no rows.
  void run();
  void reset();

  // Columns are 0-based, as in SQLite.
  bool is_null(int c) const;
  int64_t integer(int c) const;
  std::string text(int c) const;
  Bytes blob(int c) const;

 private:
  friend class Db;
  struct Finalizer {
    void operator()(sqlite3_stmt* s) const;
  };
  Stmt(const Db* db, sqlite3_stmt* s, std::shared_ptr<StmtCache> cache) : db_(db), cache_(std::move(cache)), stmt_(s) {}
  const Db* db_;
  std::shared_ptr<StmtCache> cache_;
  std::unique_ptr<sqlite3_stmt, Finalizer> stmt_;
};

}  // namespace cairn::catalog::sqlite
