// The backends a repository location can name. A new backend is a folder
// beside s3/ and one line in kRemote.
#include "common/repo/storage/registry.h"

#include <cstdio>
#include <mutex>
#include <regex>

#include "common/repo/storage/redact.h"
#include "common/repo/storage/retry.h"
#include "common/util/error.h"

namespace cairn::repo {
namespace {

std::mutex g_log_mu;
std::function<void(const std::string&)> g_log;

const storage::BackendKind kRemote[] = {
    {"s3", storage::s3::is_s3_location, storage::s3::make_s3_backend},
    {"azure", storage::azure::is_azure_location, storage::azure::make_azure_backend},
};

}  // namespace

void set_storage_log(std::function<void(const std::string&)> fn) {
  std::lock_guard g(g_log_mu);
  g_log = std::move(fn);
}

void storage_log(const std::string& msg) {
  std::lock_guard g(g_log_mu);
  if (g_log)
    g_log(msg);
  else
    std::fprintf(stderr, "cairn: storage: %s\n", msg.c_str());
}

bool is_remote_location(const std::string& location) {
  for (const auto& k : kRemote)
    if (k.matches(location)) return true;
  return false;
}

std::unique_ptr<Backend> open_backend(const std::string& location, const StorageOptions& opt) {
  for (const auto& k : kRemote)
    if (k.matches(location)) {
      auto be = k.make(location, opt);
      return opt.retry ? storage::make_retrying(std::move(be)) : std::move(be);
    }
  // Something that looks like a URL of a scheme we do not know is not a directory name.
  static const std::regex scheme("^[a-z][a-z0-9+.-]*:(//|https?://)");
  if (std::regex_search(location, scheme))
    throw Error(Errc::invalid_input, "repository location '" + redact_location(location) +
                                         "' names a scheme this build does not know "
                                         "(known: a directory path, s3:https://host[:port]/bucket[/prefix], s3://bucket[/prefix], "
                                         "azure://account/container[/prefix], azure:https://host[:port]/account/container[/prefix])");
  return make_fs_backend(location);
}

namespace storage {

void require_created(Backend& be, const Handle& h, uint64_t size, const std::string& shown) {
  auto o = be.stat(h);
  if (!o) throw Error(Errc::unavailable, "cannot store '" + shown + "': the store refused it as existing, then did not list it");
  if (o->size != size)
    throw Error(Errc::corrupt, "cannot store '" + shown + "': an object of " + std::to_string(o->size) +
                                   " bytes is already there where cairn writes " + std::to_string(size) +
                                   " (something else wrote this name); run 'cairnctl repo check'");
}

}  // namespace storage
}  // namespace cairn::repo
