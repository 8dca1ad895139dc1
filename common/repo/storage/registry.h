#pragma once
// The list of backends (registry.cc) and what they share: a log hook, so a
// library warning (a retry, a store that ignores conditional writes) reaches
// the program's own log instead of stderr.
#include <functional>
#include <memory>
#include <string>

#include "common/repo/storage/backend.h"

namespace cairn::repo {

// Messages of the storage layer: retries, fallbacks. Default: stderr.
void set_storage_log(std::function<void(const std::string&)> fn);
void storage_log(const std::string& msg);

namespace storage {

// A create (If-None-Match: *) refused because the name exists: a try whose answer
// was lost, or another writer of the same content-addressed bytes, counts as this
// write. Fails with Errc::corrupt when the object there has another size, and
// Errc::unavailable when the store no longer shows it. `shown`: the object as
// messages name it (no secret).
void require_created(Backend& be, const Handle& h, uint64_t size, const std::string& shown);

struct BackendKind {
  const char* name;  // "s3"
  bool (*matches)(const std::string& location);
  std::unique_ptr<Backend> (*make)(const std::string& location, const StorageOptions& opt);
};

}  // namespace storage
}  // namespace cairn::repo

namespace cairn::repo::storage::s3 {
std::unique_ptr<Backend> make_s3_backend(const std::string& location, const StorageOptions& opt);
bool is_s3_location(const std::string& location);
}  // namespace cairn::repo::storage::s3

namespace cairn::repo::storage::azure {
std::unique_ptr<Backend> make_azure_backend(const std::string& location, const StorageOptions& opt);
bool is_azure_location(const std::string& location);
}  // namespace cairn::repo::storage::azure
