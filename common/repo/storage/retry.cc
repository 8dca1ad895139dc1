#include "common/repo/storage/retry.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>
#include <unordered_set>

#include "common/repo/storage/registry.h"
#include "common/util/error.h"

namespace cairn::repo::storage {
namespace {

class RetryingBackend final : public Backend {
 public:
  RetryingBackend(std::unique_ptr<Backend> in, RetryPolicy p) : in_(std::move(in)), p_(p) {}

  std::string location() const override { return in_->location(); }
  BackendCaps caps() const override { return in_->caps(); }
  void create() override {
    run("create", "", [&] {
      in_->create();
      return 0;
    });
  }
  void save(const Handle& h, std::span<const uint8_t> data) override {
    run("store", name(h), [&] {
      in_->save(h, data);
      return 0;
    });
  }
  void replace(const Handle& h, std::span<const uint8_t> data) override {
    run("store", name(h), [&] {
      in_->replace(h, data);
      return 0;
    });
  }
  bool create_exclusive(const Handle& h, std::span<const uint8_t> data) override {
    bool tried = false;
    return run("create", name(h), [&] {
      bool first = !tried;
      tried = true;
      if (in_->create_exclusive(h, data)) return true;
      if (first) return false;
      // An earlier try may have created it and lost the answer: ours if it holds our bytes.
      try {
        Bytes b = in_->load(h);
        return b.size() == data.size() && std::equal(b.begin(), b.end(), data.begin());
      } catch (const Error& e) {
        if (e.code() == Errc::not_found) return false;
        throw;
      }
    });
  }
  Bytes load(const Handle& h, uint64_t offset, uint64_t length) override {
    return run("read", name(h), [&] { return in_->load(h, offset, length); });
  }
  void load_into(const Handle& h, uint64_t offset, uint64_t length, Bytes& out) override {
    run("read", name(h), [&] {
      in_->load_into(h, offset, length, out);
      return 0;
    });
  }
  std::optional<uint64_t> size(const Handle& h) override {
    return run("look up", name(h), [&] { return in_->size(h); });
  }
  void remove(const Handle& h) override {
    run("delete", name(h), [&] {
      in_->remove(h);
      return 0;
    });
  }
  void list(FileType t, const std::function<void(const std::string&, uint64_t)>& fn) override {
    // A listing is retried whole; names seen in a failed try are not passed on twice.
    std::unordered_set<std::string> seen;
    run("list", file_type_name(t), [&] {
      in_->list(t, [&](const std::string& n, uint64_t s) {
        if (seen.insert(n).second) fn(n, s);
      });
      return 0;
    });
  }
  bool retains_deleted_versions() override {
    return run("ask about Object Lock", "", [&] { return in_->retains_deleted_versions(); });
  }
  void list_deleted_versions(const std::function<void(const KeptVersion&)>& fn) override {
    // Retried whole, as list(); versions seen in a failed try are not passed on twice.
    std::unordered_set<std::string> seen;
    run("list versions", "", [&] {
      in_->list_deleted_versions([&](const KeptVersion& v) {
        if (seen.insert(v.key + '\n' + v.version).second) fn(v);
      });
      return 0;
    });
  }
  std::string remove_version(const KeptVersion& v) override {
    return run("delete a version of", v.key, [&] { return in_->remove_version(v); });
  }
  void list_leftovers(const std::function<void(const std::string&, uint64_t)>& fn) override { in_->list_leftovers(fn); }
  void remove_leftover(const std::string& path) override { in_->remove_leftover(path); }
  std::string cache_dir() const override { return in_->cache_dir(); }
  bool exclusive_create_enforced() override {
    return run("probe", "", [&] { return in_->exclusive_create_enforced(); });
  }
  StoreProtection protection() override {
    return run("ask about versioning of", "", [&] { return in_->protection(); });
  }
  void list_info(FileType t, const std::function<void(const ObjectInfo&)>& fn) override {
    std::unordered_set<std::string> seen;
    run("list", file_type_name(t), [&] {
      in_->list_info(t, [&](const ObjectInfo& o) {
        if (seen.insert(o.name).second) fn(o);
      });
      return 0;
    });
  }
  std::optional<ObjectInfo> stat(const Handle& h) override {
    return run("look up", name(h), [&] { return in_->stat(h); });
  }
  std::vector<ObjectVersion> versions(const Handle& h) override {
    return run("list the versions of", name(h), [&] { return in_->versions(h); });
  }
  Bytes load_version(const Handle& h, const std::string& version) override {
    return run("read a version of", name(h), [&] { return in_->load_version(h, version); });
  }
  StorageCounters counters() const override {
    StorageCounters c = in_->counters();
    c.retries = retries_.load();
    c.failures = failures_.load();
    return c;
  }

 private:
  static std::string name(const Handle& h) {
    return h.type == FileType::config ? "config" : std::string(file_type_name(h.type)) + "/" + h.name;
  }

  template <class F>
  auto run(const char* op, const std::string& what, F&& f) const -> decltype(f()) {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    for (int attempt = 1;; ++attempt) {
      try {
        return f();
      } catch (const Error& e) {
        if (e.code() != Errc::unavailable) throw;
        if (attempt >= p_.max_tries) {
          failures_++;
          throw Error(Errc::unavailable, std::string(e.what()) + " (gave up after " + std::to_string(attempt) +
                                             " tries; check the store and the network, then run the command again)");
        }
        auto ceiling = std::min<int64_t>(p_.cap.count(), p_.first.count() << std::min(attempt - 1, 20));
        auto wait = std::chrono::milliseconds(std::uniform_int_distribution<int64_t>(ceiling / 2, ceiling)(rng));
        retries_++;
        storage_log("retrying to " + std::string(op) + " '" + what + "' in '" + in_->location() + "' in " + std::to_string(wait.count()) +
                    " ms (try " + std::to_string(attempt + 1) + " of " + std::to_string(p_.max_tries) + "): " + e.what());
        std::this_thread::sleep_for(wait);
      }
    }
  }

  std::unique_ptr<Backend> in_;
  RetryPolicy p_;
  mutable std::atomic<uint64_t> retries_{0}, failures_{0};
};

}  // namespace

RetryPolicy RetryPolicy::from_env() {
  RetryPolicy p;
  if (const char* e = std::getenv("CAIRN_STORAGE_RETRY_FOR_TESTS")) {
    int t = 0;
    long f = 0, c = 0;
    if (std::sscanf(e, "%d,%ld,%ld", &t, &f, &c) == 3 && t > 0 && f >= 0 && c >= f) {
      p.max_tries = t;
      p.first = std::chrono::milliseconds(f);
      p.cap = std::chrono::milliseconds(c);
    }
  }
  return p;
}

std::unique_ptr<Backend> make_retrying(std::unique_ptr<Backend> inner, RetryPolicy p) {
  return std::make_unique<RetryingBackend>(std::move(inner), p);
}

}  // namespace cairn::repo::storage
