#pragma once
// The controller's catalog: agents, keys, backup sets, tasks, snapshots,
// restores, locks and the audit outbox in one SQLite file (WAL, foreign keys,
// numbered migrations). The file and its -wal/-shm are owner-only (0600).
// Until a publisher ships the audit outbox, Tx::prune_audit keeps it bounded
// (docs/configuration.md § [audit]).
//
//   auto cat = Catalog::open("/var/lib/cairn/catalog.db");
//   auto id = cat.transaction("operator:alice", [&](Tx& tx) {
//     return tx.create_backup_set(set);   // audit event included
//   });
//
// A Catalog is one connection: use it from one thread at a time.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>

#include "controller/catalog/tx.h"

namespace cairn::catalog {

struct CatalogOptions {
  // Unix milliseconds; tests pin it.
  std::function<int64_t()> clock_ms;
  int busy_timeout_ms = 5000;
};

class Catalog {
 public:
  // Opens or creates the catalog (mode 0600; an existing file readable by
  // group or others is tightened) and applies pending migrations.
  static Catalog open(const std::string& path, CatalogOptions options = {});

  Catalog(Catalog&&) noexcept;
  Catalog& operator=(Catalog&&) noexcept;
  ~Catalog();

  int schema_version() const { return schema_version_; }
  const std::string& path() const { return path_; }

  // Runs fn in one write transaction (BEGIN IMMEDIATE). If fn throws, nothing
  // it did stays — neither state changes nor audit events — and the exception
  // propagates. actor names who acts: "operator:<name>", "agent:<id>",
  // "controller".
  template <class Fn>
  decltype(auto) transaction(std::string_view actor, Fn&& fn) {
    Scope scope(*this, /*write=*/true);
    Tx tx = make_tx(actor);
    if constexpr (std::is_void_v<std::invoke_result_t<Fn, Tx&>>) {
      fn(tx);
      before_commit(tx);
      scope.commit();
    } else {
      auto result = fn(tx);
      before_commit(tx);
      scope.commit();
      return result;
    }
  }

  // With a publisher: the bound on unpublished audit events, applied in every
  // transaction that adds one (Tx::cap_audit_outbox; 0: none). Set once.
  void set_audit_outbox_cap(int64_t max_unpublished) { outbox_cap_ = max_unpublished; }

  // Runs fn in a read transaction: one consistent snapshot of the catalog.
  template <class Fn>
  decltype(auto) read(Fn&& fn) {
    Scope scope(*this, /*write=*/false);
    const Tx tx = make_tx("reader");
    if constexpr (std::is_void_v<std::invoke_result_t<Fn, const Tx&>>) {
      fn(tx);
      scope.commit();
    } else {
      auto result = fn(tx);
      scope.commit();
      return result;
    }
  }

  // See TaskEndedHook (tx.h). Set once, before the first transaction.
  void set_task_ended_hook(TaskEndedHook hook) { on_ended_ = std::move(hook); }

  // Reads the whole outbox and checks its hash chain.
  ChainReport verify_audit_chain();

  // Frees the page cache pages no statement holds (sqlite3_db_release_memory)
  // and returns the bytes freed, as SQLite's process-wide counter saw them
  // (for logs). The cache refills from the file (the OS's page cache) when
  // read again; call it between transactions when idle. Inside one: 0.
  int64_t release_memory();

 private:
  void before_commit(Tx& tx);
  int64_t outbox_cap_ = 0;
  int64_t outbox_bound_ = -1;  // an upper bound on unpublished audit events (-1: not counted yet)
  // Begins on construction; rolls back on destruction unless committed.
  class Scope {
   public:
    Scope(Catalog& c, bool write);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    void commit();

   private:
    Catalog& c_;
    bool done_ = false;
  };

  Catalog() = default;
  Tx make_tx(std::string_view actor);

  std::unique_ptr<sqlite::Db> db_;
  CatalogOptions options_;
  TaskEndedHook on_ended_;
  std::string path_;
  int schema_version_ = 0;
};

}  // namespace cairn::catalog
