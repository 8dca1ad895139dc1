#pragma once
// The local cache of a remote repository: what every open reads again (index
// files, snapshots, and the sealed tree blobs a backup compares against its
// parent), kept under <cache dir>/<repository id>/. Entries are the store's
// sealed bytes with the fingerprint of the object they came from, and an entry
// is believed only when that fingerprint is what the store holds now: an index
// file's or snapshot's entity tag as this open's listing shows it, a tree's
// pack's entity tag as the store answers it (once per pack and open). Then
// they are checked again: index files and snapshots by the SHA-256 their name
// is, tree blobs by the repository's own authentication and id check. An
// entry that fails either is dropped and the store's copy is read; entries
// whose names the store no longer lists are removed when the store is listed.
// Only objects the store names are ever asked for: the store, not the cache,
// says what exists, and what it holds under a name. Writes to the cache never
// fail an operation. `cairnctl repo check` reads no entry at all.
//
// Size: each open trims the repository's cache to a bound (CAIRN_CACHE_MAX,
// bytes with an optional K/M/G suffix; default 2G), removing the entries
// used longest ago first (a hit refreshes an entry's time). Index files and
// snapshots go last: every open reads them all, while a tree is read only by
// a backup or restore of the snapshot that has it.
#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <span>
#include <string>

#include "common/util/encoding.h"

namespace cairn::repo::storage {

class ObjectCache {
 public:
  explicit ObjectCache(std::string dir);  // <cache dir>/<repository id>
  // The entry's bytes when it was put with this fingerprint (never for an empty one).
  std::optional<Bytes> get(const char* kind, const std::string& name, const std::string& fingerprint);
  void put(const char* kind, const std::string& name, std::span<const uint8_t> data, const std::string& fingerprint) noexcept;
  void drop(const char* kind, const std::string& name) noexcept;
  // Removes the entries of kind whose names are not in `listed` (what the store holds).
  void keep_only(const char* kind, const std::set<std::string>& listed) noexcept;
  // Removes the entries of kind for which keep(name) is false.
  void keep_if(const char* kind, const std::function<bool(const std::string&)>& keep) noexcept;
  // Removes entries, those used longest ago first (trees before index files
  // and snapshots), until the cache holds at most max_bytes. Returns the
  // bytes removed.
  uint64_t trim(uint64_t max_bytes) noexcept;
  const std::string& dir() const { return dir_; }
  uint64_t hits() const { return hits_.load(); }
  uint64_t misses() const { return misses_.load(); }

 private:
  std::string path(const char* kind, const std::string& name) const;
  // Calls fn(directory fd, entry name) for each entry of kind's directory
  // but "." and "..".
  void each_entry(const char* kind, const std::function<void(int, const std::string&)>& fn) const;
  std::string dir_;
  std::atomic<uint64_t> hits_{0}, misses_{0};
};

// CAIRN_CACHE_DIR, else $XDG_CACHE_HOME/cairn, else $HOME/.cache/cairn, else
// /var/tmp/cairn-cache-<uid>.
std::string default_cache_dir();

// CAIRN_CACHE_MAX (bytes, or with a K, M or G suffix), else 2 GiB. A value
// that does not parse is the default.
uint64_t default_cache_max();

}  // namespace cairn::repo::storage
