#pragma once
// The backend conformance suite: what every backend must do, whatever it talks
// to. A backend's test joins it in a few lines, inside a TEST_CASE whose name
// starts with "conformance:":
//
//   TEST_CASE("conformance: my backend") {
//     conformance::run([] { return make_my_backend(fresh_location()); });
//   }
//
// `fresh` opens a new, empty repository location each time it is called
// (create() is the suite's first call on it): Catch2 runs the test case once
// for each SECTION below, and each gets a repository of its own. The
// sections: missing objects, round trips and ranged reads, reads past the end,
// saves over an existing name, listings (per type, longer than a page), large
// objects appearing whole, exclusive create, create over a repository, a
// listing its callback stops, and many threads saving, loading, listing and
// removing at once. The Backend interface has no cancel flag: a caller stops
// a listing by throwing from its callback, and that is the cancel case.
// One section runs alone with `-c "<section>"`.
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/repo/storage/backend.h"
#include "common/util/error.h"

namespace cairn::repo::conformance {

struct Options {
  // A store that does not enforce If-None-Match: * fails the suite instead of
  // being reported (a warning) and skipped in the exclusive-create section.
  bool expect_exclusive = false;
};

// Bytes of a fixed pseudo-random pattern (xorshift), different for each seed.
inline Bytes pattern(size_t n, uint8_t seed) {
  Bytes b(n);
  uint32_t x = 2463534242u ^ seed;
  for (auto& c : b) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = uint8_t(x);
  }
  return b;
}

// A name of 64 hex digits whose first two spread over data/xx.
inline std::string hex_name(int i) {
  char b[65];
  std::snprintf(b, sizeof b, "%02x%062d", (i * 37) & 0xff, i);
  return b;
}

inline std::map<std::string, uint64_t> listing(Backend& be, FileType t) {
  std::map<std::string, uint64_t> m;
  be.list(t, [&](const std::string& n, uint64_t s) { m[n] = s; });
  return m;
}

// Runs `f`, which must throw cairn::Error; returns it (FAIL when nothing was thrown).
template <class F>
Error error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  FAIL("no error was raised");
  return Error(Errc::io, "");
}

inline void run(const std::function<std::unique_ptr<Backend>()>& fresh, const Options& opt = {}) {
  std::unique_ptr<Backend> owner = fresh();
  Backend& be = *owner;
  INFO("backend at '" << be.location() << "'");
  be.create();

  SECTION("missing objects") {
    Handle h{FileType::snapshot, hex_name(1)};
    CHECK_FALSE(be.size(h).has_value());
    CHECK_FALSE(be.stat(h).has_value());
    for (auto load : std::vector<std::function<void()>>{[&] { be.load(h); }, [&] { be.load(h, 10, 20); },
                                                        [&] {
                                                          Bytes out;
                                                          be.load_into(h, 0, 0, out);
                                                        }}) {
      Error e = error_of(load);
      CHECK(e.code() == Errc::not_found);
      CHECK_THAT(e.what(), Catch::Contains(h.name));  // the message names the object
    }
    CHECK_NOTHROW(be.remove(h));  // removing what is gone succeeds
    CHECK(listing(be, FileType::snapshot).empty());
    CHECK(listing(be, FileType::config).empty());
  }

  SECTION("round trips, empty objects, ranged reads, replace") {
    Bytes data = pattern(100'000, 1);
    Handle h{FileType::index, hex_name(2)};
    be.save(h, data);
    CHECK(be.size(h) == data.size());
    CHECK(be.stat(h).value().size == data.size());
    CHECK(be.load(h) == data);
    CHECK(be.load(h, 10, 20) == Bytes(data.begin() + 10, data.begin() + 30));
    CHECK(be.load(h, 99'990, 0) == Bytes(data.begin() + 99'990, data.end()));
    CHECK(be.load(h, 0, data.size()) == data);
    Bytes into = pattern(50, 9);  // a reused buffer holds exactly the range afterwards
    be.load_into(h, 5, 1, into);
    CHECK(into == Bytes{data[5]});
    Handle empty{FileType::key, hex_name(3)};
    be.save(empty, {});
    CHECK(be.size(empty) == 0u);
    CHECK(be.load(empty).empty());
    CHECK(listing(be, FileType::key) == std::map<std::string, uint64_t>{{hex_name(3), 0}});
    // replace() replaces it whole (check --recover putting back an earlier version).
    REQUIRE(be.caps().atomic_replace);
    Bytes other = pattern(777, 2);
    be.replace(h, other);
    CHECK(be.load(h) == other);
    be.save({FileType::config, ""}, pattern(64, 3));
    CHECK(listing(be, FileType::config) == std::map<std::string, uint64_t>{{"config", 64}});
  }

  SECTION("reads past the end are corrupt, never a short buffer") {
    Bytes data = pattern(1000, 4);
    Handle h{FileType::pack, hex_name(4)};
    be.save(h, data);
    for (auto [offset, length] : std::vector<std::pair<uint64_t, uint64_t>>{{990, 20}, {1010, 0}, {2000, 10}, {0, 1001}}) {
      INFO("offset " << offset << ", length " << length);
      Error e = error_of([&] { be.load(h, offset, length); });
      CHECK(e.code() == Errc::corrupt);
      CHECK_THAT(e.what(), Catch::Contains(h.name));
    }
    Handle empty{FileType::index, hex_name(5)};
    be.save(empty, {});
    CHECK(error_of([&] { be.load(empty, 0, 1); }).code() == Errc::corrupt);
    CHECK(be.load(h) == data);  // and the object is still whole
  }

  SECTION("save over an existing name") {
    Bytes data = pattern(3000, 5);
    Handle h{FileType::snapshot, hex_name(6)};
    be.save(h, data);
    // The same bytes count as written (a try whose answer was lost, or another
    // writer of the same content-addressed object).
    CHECK_NOTHROW(be.save(h, data));
    CHECK(be.load(h) == data);
    // Other bytes are refused where save() creates (If-None-Match: *), and what
    // is there stays; a local filesystem replaces atomically.
    if (be.caps().remote) {
      Error e = error_of([&] { be.save(h, pattern(777, 6)); });
      CHECK(e.code() == Errc::corrupt);
      CHECK_THAT(e.what(), Catch::Contains(h.name));
      CHECK(be.load(h) == data);
    }
  }

  SECTION("every file type lists its own objects with their sizes") {
    std::map<FileType, std::map<std::string, uint64_t>> want;
    int i = 10;
    for (FileType ft : {FileType::key, FileType::pack, FileType::index, FileType::snapshot, FileType::lock, FileType::dict, FileType::claim,
                        FileType::set_record}) {
      int n = ft == FileType::pack ? 40 : 3;  // packs spread over data/xx
      for (int k = 0; k < n; ++k, ++i) {
        size_t sz = size_t(i * 13 % 300);
        be.save({ft, hex_name(i)}, pattern(sz, uint8_t(i)));
        want[ft][hex_name(i)] = sz;
      }
    }
    for (const auto& [ft, names] : want) {
      INFO(file_type_name(ft));
      CHECK(listing(be, ft) == names);
    }
    // list_info() agrees with list().
    std::map<std::string, uint64_t> info;
    be.list_info(FileType::pack, [&](const ObjectInfo& o) { info[o.name] = o.size; });
    CHECK(info == want[FileType::pack]);
    // Removed objects leave the listing.
    auto first = want[FileType::pack].begin()->first;
    be.remove({FileType::pack, first});
    want[FileType::pack].erase(first);
    CHECK(listing(be, FileType::pack) == want[FileType::pack]);
    CHECK_FALSE(be.size({FileType::pack, first}).has_value());
  }

  SECTION("a listing longer than one page") {
    std::set<std::string> want;
    for (int i = 0; i < 1100; ++i) {  // S3 pages hold 1,000 keys
      be.save({FileType::index, hex_name(5000 + i)}, {});
      want.insert(hex_name(5000 + i));
    }
    std::set<std::string> got;
    size_t calls = 0;
    be.list(FileType::index, [&](const std::string& n, uint64_t) { got.insert(n), ++calls; });
    CHECK(got == want);
    CHECK(calls == want.size());  // each name once
  }

  SECTION("a listing its callback stops") {
    struct Stop {};
    for (int i = 0; i < 20; ++i) be.save({FileType::lock, hex_name(300 + i)}, pattern(10, uint8_t(i)));
    int calls = 0;
    CHECK_THROWS_AS(be.list(FileType::lock,
                            [&](const std::string&, uint64_t) {
                              if (++calls == 3) throw Stop{};
                            }),
                    Stop);
    CHECK(calls == 3);  // nothing after the stop
    // The backend is as before: a full listing, reads and writes.
    CHECK(listing(be, FileType::lock).size() == 20u);
    CHECK(be.load({FileType::lock, hex_name(300)}) == pattern(10, 0));
    be.save({FileType::lock, hex_name(400)}, pattern(10, 40));
    CHECK(listing(be, FileType::lock).size() == 21u);
  }

  SECTION("large objects, whole or not at all") {
    Bytes big = pattern(40u << 20, 7);  // above S3's multipart and Azure's block thresholds
    Handle h{FileType::pack, hex_name(9000)};
    std::atomic<bool> done{false}, partial{false};
    std::thread watcher([&] {
      while (!done) {
        auto s = be.size(h);
        if (s && *s != big.size()) partial = true;
      }
    });
    be.save(h, big);
    done = true;
    watcher.join();
    CHECK_FALSE(partial);  // nobody saw a part of it
    CHECK(be.size(h) == big.size());
    CHECK(be.load(h) == big);
    // A range across S3's 16 MiB part boundary.
    uint64_t off = (16u << 20) - 1000;
    CHECK(be.load(h, off, 5000) == Bytes(big.begin() + off, big.begin() + off + 5000));
  }

  SECTION("many threads saving, loading, listing and removing at once") {
    constexpr int kThreads = 8, kEach = 12;
    auto name = [](int t, int k) { return hex_name(20'000 + t * 100 + k); };
    auto bytes = [](int t, int k) { return pattern(size_t(500 + t * 97 + k * 31), uint8_t(t * 16 + k)); };
    const Bytes shared = pattern(4096, 99);
    const Handle shared_h{FileType::pack, hex_name(19'999)};
    std::mutex mu;  // Catch2's assertions are not thread-safe: failures are collected
    std::vector<std::string> problems;
    auto problem = [&](const std::string& p) {
      std::lock_guard g(mu);
      problems.push_back(p);
    };
    std::atomic<bool> writing{true};
    std::thread lister([&] {
      // While writers write: every listed object is whole (its final size).
      try {
        while (writing) {
          be.list(FileType::pack, [&](const std::string& n, uint64_t s) {
            for (int t = 0; t < kThreads; ++t)
              for (int k = 0; k < kEach; ++k)
                if (n == name(t, k) && s != bytes(t, k).size()) problem("listed '" + n + "' at " + std::to_string(s) + " bytes");
          });
        }
      } catch (const std::exception& e) {
        problem(std::string("lister: ") + e.what());
      }
    });
    std::vector<std::thread> ws;
    for (int t = 0; t < kThreads; ++t)
      ws.emplace_back([&, t] {
        try {
          for (int k = 0; k < kEach; ++k) {
            be.save({FileType::pack, name(t, k)}, bytes(t, k));
            if (be.load({FileType::pack, name(t, k)}) != bytes(t, k)) problem("read back other bytes of '" + name(t, k) + "'");
          }
          be.save(shared_h, shared);  // every thread writes the same content-addressed object
          Bytes part;
          be.load_into(shared_h, 100, 50, part);
          if (part != Bytes(shared.begin() + 100, shared.begin() + 150)) problem("a ranged read of the shared object");
        } catch (const std::exception& e) {
          problem(std::string("writer ") + std::to_string(t) + ": " + e.what());
        }
      });
    for (auto& w : ws) w.join();
    writing = false;
    lister.join();
    CHECK(problems.empty());
    for (const auto& p : problems) UNSCOPED_INFO(p);

    std::map<std::string, uint64_t> want{{shared_h.name, shared.size()}};
    for (int t = 0; t < kThreads; ++t)
      for (int k = 0; k < kEach; ++k) want[name(t, k)] = bytes(t, k).size();
    CHECK(listing(be, FileType::pack) == want);

    // Half removed while the other half is read, at once.
    ws.clear();
    for (int t = 0; t < kThreads; ++t)
      ws.emplace_back([&, t] {
        try {
          for (int k = 0; k < kEach; ++k) {
            if (t % 2)
              be.remove({FileType::pack, name(t, k)});
            else if (be.load({FileType::pack, name(t, k)}) != bytes(t, k))
              problem("read back other bytes of '" + name(t, k) + "'");
          }
        } catch (const std::exception& e) {
          problem(std::string("thread ") + std::to_string(t) + ": " + e.what());
        }
      });
    for (auto& w : ws) w.join();
    CHECK(problems.empty());
    for (const auto& p : problems) UNSCOPED_INFO(p);
    for (int t = 1; t < kThreads; t += 2)
      for (int k = 0; k < kEach; ++k) want.erase(name(t, k));
    CHECK(listing(be, FileType::pack) == want);
  }

  SECTION("exclusive create") {
    if (!be.exclusive_create_enforced()) {
      WARN("'" << be.location() << "' does not enforce exclusive create: claims are off there");
      CHECK_FALSE(opt.expect_exclusive);
      return;
    }
    Handle h{FileType::claim, hex_name(7000)};
    CHECK(be.create_exclusive(h, pattern(10, 1)));
    CHECK_FALSE(be.create_exclusive(h, pattern(10, 2)));
    CHECK(be.load(h) == pattern(10, 1));  // the first one's bytes stay
    // Racing writers: exactly one wins each name.
    for (int round = 0; round < 5; ++round) {
      Handle r{FileType::claim, hex_name(7100 + round)};
      std::atomic<int> wins{0};
      std::vector<std::thread> ws;
      for (int w = 0; w < 6; ++w)
        ws.emplace_back([&, w] {
          if (be.create_exclusive(r, pattern(32, uint8_t(w)))) wins++;
        });
      for (auto& w : ws) w.join();
      CHECK(wins == 1);
    }
    // The probe leaves nothing a listing shows.
    CHECK(listing(be, FileType::lock).empty());
  }

  SECTION("create refuses an existing repository") {
    be.save({FileType::config, ""}, pattern(10, 1));
    CHECK(error_of([&] { be.create(); }).code() == Errc::exists);
  }
}

}  // namespace cairn::repo::conformance
