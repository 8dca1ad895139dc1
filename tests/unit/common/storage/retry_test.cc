// The retry wrapper (retry.h) over a fake backend that injects faults as the
// wrapper sees them: cairn::Error values from the backend below it. A
// transient failure (Errc::unavailable: no answer, a timeout, 5xx, a body cut
// short) is tried again up to the policy's count; anything else is passed on
// at once, unchanged.
#include "common/repo/storage/retry.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "common/repo/storage/registry.h"
#include "common/util/error.h"

using namespace cairn;
using namespace cairn::repo;
using storage::RetryPolicy;

namespace {

// Objects in memory, and a script of faults: each fault is raised by the next
// call of its operation ("save", "load", "list", ...), in order; a fault with
// `after` > 0 lets a listing pass that many names on first, and one with
// `partial` writes part of the object into load_into's buffer first.
class FaultyBackend final : public Backend {
 public:
  struct Fault {
    Errc code;
    std::string cause;
    size_t after = 0;
    bool partial = false;
    bool stores = false;  // the write happens, then its answer is lost
  };

  std::string location() const override { return "fake:"; }
  BackendCaps caps() const override { return {.remote = true, .atomic_replace = true, .exclusive_create = true}; }
  void create() override { maybe_fail("create", ""); }
  void save(const Handle& h, std::span<const uint8_t> data) override {
    auto f = next_fault("save");
    if (f && f->stores) put(h, data);
    if (f) raise(*f, "store", h);
    put(h, data);
  }
  bool create_exclusive(const Handle& h, std::span<const uint8_t> data) override {
    auto f = next_fault("create_exclusive");
    if (f && !f->stores) raise(*f, "create", h);
    bool created = false;
    {
      std::lock_guard g(mu_);
      created = objects_.emplace(object_path(h), Bytes(data.begin(), data.end())).second;
    }
    if (f) raise(*f, "create", h);
    return created;
  }
  Bytes load(const Handle& h, uint64_t offset, uint64_t length) override {
    Bytes out;
    load_into(h, offset, length, out);
    return out;
  }
  void load_into(const Handle& h, uint64_t offset, uint64_t length, Bytes& out) override {
    auto f = next_fault("load");
    Bytes whole = get(h);
    if (f && f->partial) out.assign(whole.begin(), whole.begin() + static_cast<ptrdiff_t>(whole.size() / 2));
    if (f) raise(*f, "read", h);
    if (offset + length > whole.size() || offset > whole.size())
      throw Error(Errc::corrupt, "'" + object_path(h) + "' is shorter than expected");
    uint64_t n = length ? length : whole.size() - offset;
    out.assign(whole.begin() + static_cast<ptrdiff_t>(offset), whole.begin() + static_cast<ptrdiff_t>(offset + n));
  }
  std::optional<uint64_t> size(const Handle& h) override {
    maybe_fail("size", object_path(h));
    std::lock_guard g(mu_);
    auto it = objects_.find(object_path(h));
    if (it == objects_.end()) return std::nullopt;
    return it->second.size();
  }
  void remove(const Handle& h) override {
    maybe_fail("remove", object_path(h));
    std::lock_guard g(mu_);
    objects_.erase(object_path(h));
  }
  void list(FileType t, const std::function<void(const std::string&, uint64_t)>& fn) override {
    auto f = next_fault("list");
    std::vector<std::pair<std::string, uint64_t>> names;
    {
      std::lock_guard g(mu_);
      const std::string dir = std::string(file_type_name(t)) + "/";
      for (const auto& [p, b] : objects_)
        if (p.rfind(dir, 0) == 0) names.emplace_back(p.substr(dir.size()), b.size());
    }
    size_t passed = 0;
    for (const auto& [n, s] : names) {
      if (f && passed == f->after) break;
      fn(n, s);
      ++passed;
    }
    if (f) throw Error(f->code, "cannot list '" + std::string(file_type_name(t)) + "': " + f->cause);
  }
  StorageCounters counters() const override {
    return {.requests = calls_.load(), .retries = 0, .failures = 0, .bytes_sent = 7, .bytes_received = 11};
  }
  std::string cache_dir() const override { return "/fake/cache"; }

  void fault(const std::string& op, Fault f, int times = 1) {
    std::lock_guard g(mu_);
    for (int i = 0; i < times; ++i) faults_[op].push_back(f);
  }
  int calls(const std::string& op) {
    std::lock_guard g(mu_);
    return per_op_[op];
  }
  void put(const Handle& h, std::span<const uint8_t> data) {
    std::lock_guard g(mu_);
    objects_[object_path(h)] = Bytes(data.begin(), data.end());
  }

 private:
  std::optional<Fault> next_fault(const std::string& op) {
    calls_++;
    std::lock_guard g(mu_);
    per_op_[op]++;
    auto& q = faults_[op];
    if (q.empty()) return std::nullopt;
    Fault f = q.front();
    q.pop_front();
    return f;
  }
  void maybe_fail(const std::string& op, const std::string& what) {
    if (auto f = next_fault(op)) throw Error(f->code, "cannot " + op + " '" + what + "': " + f->cause);
  }
  [[noreturn]] static void raise(const Fault& f, const std::string& op, const Handle& h) {
    throw Error(f.code, "cannot " + op + " '" + object_path(h) + "': " + f.cause);
  }
  Bytes get(const Handle& h) {
    std::lock_guard g(mu_);
    auto it = objects_.find(object_path(h));
    if (it == objects_.end()) throw Error(Errc::not_found, "cannot read '" + object_path(h) + "': no such object");
    return it->second;
  }

  std::mutex mu_;
  std::map<std::string, Bytes> objects_;
  std::map<std::string, std::deque<Fault>> faults_;
  std::map<std::string, int> per_op_;
  std::atomic<uint64_t> calls_{0};
};

// The wrapper's log lines for the length of a test.
struct CapturedLog {
  std::mutex mu;
  std::vector<std::string> lines;
  CapturedLog() {
    set_storage_log([this](const std::string& m) {
      std::lock_guard g(mu);
      lines.push_back(m);
    });
  }
  ~CapturedLog() { set_storage_log(nullptr); }
};

RetryPolicy quick(int tries) {
  return RetryPolicy{.max_tries = tries, .first = std::chrono::milliseconds(0), .cap = std::chrono::milliseconds(0)};
}

struct Wrapped {
  FaultyBackend* fake;
  std::unique_ptr<Backend> be;
};
Wrapped wrapped(RetryPolicy p) {
  auto f = std::make_unique<FaultyBackend>();
  FaultyBackend* raw = f.get();
  return {raw, storage::make_retrying(std::move(f), p)};
}

Bytes some_bytes(size_t n) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = uint8_t(i * 7 + 1);
  return b;
}

const Handle kIndex{FileType::index, "ab12"};

}  // namespace

TEST_CASE("retry: the documented policy is 8 tries, and the test override parses or is ignored") {
  ::unsetenv("CAIRN_STORAGE_RETRY_FOR_TESTS");
  RetryPolicy d = RetryPolicy::from_env();
  CHECK(d.max_tries == 8);
  CHECK(d.first == std::chrono::milliseconds(200));
  CHECK(d.cap == std::chrono::milliseconds(20'000));
  ::setenv("CAIRN_STORAGE_RETRY_FOR_TESTS", "3,10,50", 1);
  RetryPolicy t = RetryPolicy::from_env();
  CHECK(t.max_tries == 3);
  CHECK(t.first == std::chrono::milliseconds(10));
  CHECK(t.cap == std::chrono::milliseconds(50));
  for (const char* bad : {"0,10,50", "3,50,10", "3,-1,10", "three", "3,10"}) {
    INFO(bad);
    ::setenv("CAIRN_STORAGE_RETRY_FOR_TESTS", bad, 1);
    CHECK(RetryPolicy::from_env().max_tries == 8);
  }
  ::unsetenv("CAIRN_STORAGE_RETRY_FOR_TESTS");
}

TEST_CASE("retry: a transient failure is tried again until it passes, each retry counted and logged") {
  CapturedLog log;
  auto w = wrapped(quick(8));
  w.fake->put(kIndex, some_bytes(100));
  // Seven failures and the eighth try passes: the documented count, used up exactly.
  w.fake->fault("load", {Errc::unavailable, "Connection reset by peer"}, 7);
  CHECK(w.be->load(kIndex, 0, 0) == some_bytes(100));
  CHECK(w.fake->calls("load") == 8);
  StorageCounters c = w.be->counters();
  CHECK(c.retries == 7);
  CHECK(c.failures == 0);
  CHECK(c.requests == 8);  // the backend's own counts pass through
  CHECK(c.bytes_sent == 7);
  CHECK(c.bytes_received == 11);
  REQUIRE(log.lines.size() == 7);
  // Each line names the operation, the object, the store, the try and the cause.
  CHECK_THAT(log.lines[0], Catch::Contains("retrying to read 'index/ab12' in 'fake:'") && Catch::Contains("(try 2 of 8)") &&
                               Catch::Contains("Connection reset by peer"));
  CHECK_THAT(log.lines[6], Catch::Contains("(try 8 of 8)"));
}

TEST_CASE("retry: a transient failure on every try gives up after the policy's count, naming the object and the cause") {
  CapturedLog log;
  auto w = wrapped(quick(3));
  w.fake->fault("save", {Errc::unavailable, "the store answered SlowDown (HTTP 503)"}, 3);
  try {
    w.be->save(kIndex, some_bytes(10));
    FAIL("a save that never passed succeeded");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::unavailable);
    const std::string m = e.what();
    CHECK_THAT(m, Catch::Contains("index/ab12") && Catch::Contains("SlowDown (HTTP 503)") && Catch::Contains("gave up after 3 tries") &&
                      Catch::Contains("run the command again"));
  }
  CHECK(w.fake->calls("save") == 3);
  StorageCounters c = w.be->counters();
  CHECK(c.retries == 2);
  CHECK(c.failures == 1);  // one operation given up on
  CHECK(log.lines.size() == 2);
  // The next operation starts afresh with the whole count.
  w.fake->fault("save", {Errc::unavailable, "timeout"}, 2);
  CHECK_NOTHROW(w.be->save(kIndex, some_bytes(10)));
  CHECK(w.be->counters().retries == 4);
  CHECK(w.be->counters().failures == 1);
}

TEST_CASE("retry: a permanent failure is passed on at once, unchanged") {
  for (Errc code : {Errc::not_found, Errc::denied, Errc::corrupt, Errc::io, Errc::no_repo, Errc::invalid_input, Errc::exists,
                    Errc::no_space, Errc::unsupported}) {
    INFO(errc_name(code));
    CapturedLog log;
    auto w = wrapped(quick(5));
    w.fake->put(kIndex, some_bytes(10));
    w.fake->fault("load", {code, "the store said no"});
    try {
      w.be->load(kIndex, 0, 0);
      FAIL("a refused read succeeded");
    } catch (const Error& e) {
      CHECK(e.code() == code);
      CHECK(std::string(e.what()) == "cannot read 'index/ab12': the store said no");  // no "gave up" added
    }
    CHECK(w.fake->calls("load") == 1);
    CHECK(w.be->counters().retries == 0);
    CHECK(w.be->counters().failures == 0);  // failures count operations given up on after retries
    CHECK(log.lines.empty());
  }
}

TEST_CASE("retry: a read cut short is read again whole, a short object is not retried") {
  auto w = wrapped(quick(4));
  const Bytes whole = some_bytes(1000);
  w.fake->put(kIndex, whole);
  // A body cut mid-transfer leaves half the bytes in the caller's buffer: the retry's read replaces them.
  w.fake->fault("load", {.code = Errc::unavailable, .cause = "transfer closed with 500 bytes remaining to read", .partial = true}, 2);
  Bytes out = some_bytes(3);
  w.be->load_into(kIndex, 100, 200, out);
  CHECK(out == Bytes(whole.begin() + 100, whole.begin() + 300));
  CHECK(w.be->counters().retries == 2);
  // An object shorter than the range asked for is damage, not a network fault: one try.
  try {
    w.be->load(kIndex, 900, 200);
    FAIL("a range past the end was served");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::corrupt);
  }
  CHECK(w.fake->calls("load") == 4);
  CHECK(w.be->counters().retries == 2);
}

TEST_CASE("retry: timeouts wait an exponential backoff between tries, capped") {
  auto w = wrapped(RetryPolicy{.max_tries = 4, .first = std::chrono::milliseconds(20), .cap = std::chrono::milliseconds(40)});
  w.fake->fault("size", {Errc::unavailable, "Operation timed out after 10001 milliseconds with 0 bytes received"}, 3);
  auto t0 = std::chrono::steady_clock::now();
  CHECK_FALSE(w.be->size(kIndex).has_value());
  auto took = std::chrono::steady_clock::now() - t0;
  // Waits of at least half their ceiling: 20 ms, then 40 and 40 (capped): at least 10 + 20 + 20 ms.
  CHECK(took >= std::chrono::milliseconds(50));
  CHECK(took < std::chrono::seconds(10));
  CHECK(w.fake->calls("size") == 4);
  CHECK(w.be->counters().retries == 3);
}

TEST_CASE("retry: a listing cut short is listed again whole, each name passed on once") {
  auto w = wrapped(quick(4));
  for (const char* n : {"01", "02", "03", "04", "05"}) w.fake->put({FileType::snapshot, n}, some_bytes(3));
  w.fake->fault("list", {.code = Errc::unavailable, .cause = "connection cut", .after = 2});
  w.fake->fault("list", {.code = Errc::unavailable, .cause = "connection cut", .after = 4});
  std::vector<std::string> seen;
  w.be->list(FileType::snapshot, [&](const std::string& n, uint64_t) { seen.push_back(n); });
  CHECK(seen == std::vector<std::string>{"01", "02", "03", "04", "05"});
  CHECK(w.fake->calls("list") == 3);
  CHECK(w.be->counters().retries == 2);
  // list_info goes the same way (through the backend's list here).
  w.fake->fault("list", {.code = Errc::unavailable, .cause = "connection cut", .after = 3});
  std::vector<std::string> info;
  w.be->list_info(FileType::snapshot, [&](const ObjectInfo& o) { info.push_back(o.name); });
  CHECK(info == seen);
}

TEST_CASE("retry: create_exclusive whose answer was lost is ours only if the object holds our bytes") {
  auto w = wrapped(quick(3));
  const Handle claim{FileType::claim, "c1"};
  // The first try creates it and loses the answer; the retry is refused as existing and reads it back.
  w.fake->fault("create_exclusive", {.code = Errc::unavailable, .cause = "no answer", .stores = true});
  CHECK(w.be->create_exclusive(claim, some_bytes(8)));
  CHECK(w.fake->calls("load") == 1);
  // Another writer's bytes under the name: not ours.
  const Handle other{FileType::claim, "c2"};
  w.fake->put(other, some_bytes(9));
  w.fake->fault("create_exclusive", {.code = Errc::unavailable, .cause = "no answer"});
  CHECK_FALSE(w.be->create_exclusive(other, some_bytes(8)));
  // Refused on the first try: someone else's, without reading it.
  const int loads = w.fake->calls("load");
  CHECK_FALSE(w.be->create_exclusive(claim, some_bytes(8)));
  CHECK(w.fake->calls("load") == loads);
}

TEST_CASE("retry: many threads retrying at once are each counted") {
  // More tries than faults: every reader gets through, and every fault is
  // taken by some reader (a read passes only once none is left).
  auto w = wrapped(quick(100));
  constexpr int kThreads = 8, kFaults = 16;
  for (int t = 0; t < kThreads; ++t) w.fake->put({FileType::pack, "p" + std::to_string(t)}, some_bytes(50 + size_t(t)));
  w.fake->fault("load", {Errc::unavailable, "503"}, kFaults);
  std::atomic<int> ok{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      try {
        if (w.be->load({FileType::pack, "p" + std::to_string(t)}, 0, 0) == some_bytes(50 + size_t(t))) ok++;
      } catch (const Error&) {
      }
    });
  for (auto& t : ts) t.join();
  CHECK(ok == kThreads);
  CHECK(w.fake->calls("load") == kThreads + kFaults);
  CHECK(w.be->counters().retries == uint64_t(kFaults));
  CHECK(w.be->counters().failures == 0);
}

TEST_CASE("retry: the wrapper passes through what it does not retry") {
  auto w = wrapped(quick(3));
  CHECK(w.be->location() == "fake:");
  CHECK(w.be->caps().remote);
  CHECK(w.be->cache_dir() == "/fake/cache");
  w.fake->fault("create", {Errc::unavailable, "reset"});
  CHECK_NOTHROW(w.be->create());
  CHECK(w.fake->calls("create") == 2);
  w.fake->fault("remove", {Errc::unavailable, "reset"});
  CHECK_NOTHROW(w.be->remove(kIndex));
  CHECK(w.fake->calls("remove") == 2);
}
