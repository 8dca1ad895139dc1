// The backend conformance suite: what every backend must do, whatever it talks
// to. Here it runs against the filesystem backend; with
//   CAIRN_CONFORMANCE_URLS="s3:http://127.0.0.1:P/bucket azure://..."  (space-separated)
//   CAIRN_CONFORMANCE_CREDENTIALS=FILE  (mode 0600, for every URL)
// it runs against those stores as well (tests/integration/test_object_storage.py
// does that with a real SeaweedFS and Azurite). Each run works under a fresh
// prefix. CAIRN_CONFORMANCE_EXPECT_EXCLUSIVE=1 makes a store that ignores
// If-None-Match a failure instead of a finding.
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "common/repo/storage/backend.h"
#include "common/util/error.h"

using namespace cairn;
using namespace cairn::repo;

namespace {

std::string random_tag() {
  std::random_device rd;
  std::ostringstream s;
  s << std::hex << rd() << rd();
  return s.str();
}

struct Target {
  std::string location;
  std::unique_ptr<Backend> be;
};

std::vector<Target> targets() {
  std::vector<Target> out;
  auto dir = std::filesystem::temp_directory_path() / ("cairn-conformance-" + random_tag());
  out.push_back({dir.string(), open_backend(dir.string())});
  if (const char* urls = std::getenv("CAIRN_CONFORMANCE_URLS")) {
    StorageOptions opt;
    if (const char* c = std::getenv("CAIRN_CONFORMANCE_CREDENTIALS")) opt.credentials_file = c;
    std::istringstream in(urls);
    std::string u;
    while (in >> u) {
      std::string loc = u + "/conformance-" + random_tag();
      out.push_back({loc, open_backend(loc, opt)});
    }
  }
  for (auto& t : out) t.be->create();
  return out;
}

Bytes pattern(size_t n, uint8_t seed) {
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

std::string hex_name(int i) {
  char b[65];
  std::snprintf(b, sizeof b, "%02x%062d", (i * 37) & 0xff, i);
  return b;
}

std::map<std::string, uint64_t> listing(Backend& be, FileType t) {
  std::map<std::string, uint64_t> m;
  be.list(t, [&](const std::string& n, uint64_t s) { m[n] = s; });
  return m;
}

}  // namespace

TEST_CASE("conformance: missing objects") {
  for (auto& t : targets()) {
    INFO(t.location);
    Handle h{FileType::snapshot, hex_name(1)};
    CHECK_FALSE(t.be->size(h).has_value());
    try {
      t.be->load(h);
      FAIL("loaded a missing object");
    } catch (const Error& e) {
      CHECK(e.code() == Errc::not_found);
    }
    CHECK_NOTHROW(t.be->remove(h));  // removing what is gone succeeds
    CHECK(listing(*t.be, FileType::snapshot).empty());
  }
}

TEST_CASE("conformance: round trips, empty objects, ranged reads, replace") {
  for (auto& t : targets()) {
    INFO(t.location);
    Bytes data = pattern(100'000, 1);
    Handle h{FileType::index, hex_name(2)};
    t.be->save(h, data);
    CHECK(t.be->size(h) == data.size());
    CHECK(t.be->load(h) == data);
    CHECK(t.be->load(h, 10, 20) == Bytes(data.begin() + 10, data.begin() + 30));
    CHECK(t.be->load(h, 99'990, 0) == Bytes(data.begin() + 99'990, data.end()));
    Bytes into;
    t.be->load_into(h, 5, 1, into);
    CHECK(into == Bytes{data[5]});
    // Past the end: corrupt, not a short buffer taken for the data.
    try {
      t.be->load(h, 99'990, 20);
      FAIL("a range past the end was served");
    } catch (const Error& e) {
      CHECK(e.code() == Errc::corrupt);
    }
    Handle empty{FileType::key, hex_name(3)};
    t.be->save(empty, {});
    CHECK(t.be->size(empty) == 0u);
    CHECK(t.be->load(empty).empty());
    CHECK(listing(*t.be, FileType::key) == std::map<std::string, uint64_t>{{hex_name(3), 0}});
    // save() creates: over an existing name, the same bytes count as written (a try whose
    // answer was lost), other bytes are refused where the store enforces If-None-Match.
    REQUIRE(t.be->caps().atomic_replace);
    CHECK_NOTHROW(t.be->save(h, data));
    Bytes other = pattern(777, 2);
    if (t.be->caps().remote) {
      try {
        t.be->save(h, other);
        FAIL("save() replaced an existing object");
      } catch (const Error& e) {
        CHECK(e.code() == Errc::corrupt);
      }
      CHECK(t.be->load(h) == data);
    }
    // replace() replaces it whole (check --recover putting back an earlier version).
    t.be->replace(h, other);
    CHECK(t.be->load(h) == other);
    t.be->save({FileType::config, ""}, pattern(64, 3));
    CHECK(listing(*t.be, FileType::config) == std::map<std::string, uint64_t>{{"config", 64}});
  }
}

TEST_CASE("conformance: every file type lists its own objects with their sizes") {
  for (auto& t : targets()) {
    INFO(t.location);
    std::map<FileType, std::map<std::string, uint64_t>> want;
    int i = 10;
    for (FileType ft : {FileType::key, FileType::pack, FileType::index, FileType::snapshot, FileType::lock, FileType::dict, FileType::claim,
                        FileType::set_record}) {
      int n = ft == FileType::pack ? 40 : 3;  // packs spread over data/xx
      for (int k = 0; k < n; ++k, ++i) {
        size_t sz = size_t(i * 13 % 300);
        t.be->save({ft, hex_name(i)}, pattern(sz, uint8_t(i)));
        want[ft][hex_name(i)] = sz;
      }
    }
    for (const auto& [ft, names] : want) {
      INFO(file_type_name(ft));
      CHECK(listing(*t.be, ft) == names);
    }
    // Removed objects leave the listing.
    auto first = want[FileType::pack].begin()->first;
    t.be->remove({FileType::pack, first});
    want[FileType::pack].erase(first);
    CHECK(listing(*t.be, FileType::pack) == want[FileType::pack]);
    CHECK_FALSE(t.be->size({FileType::pack, first}).has_value());
  }
}

TEST_CASE("conformance: a listing longer than one page") {
  for (auto& t : targets()) {
    INFO(t.location);
    std::set<std::string> want;
    for (int i = 0; i < 1100; ++i) {  // S3 pages hold 1,000 keys
      t.be->save({FileType::index, hex_name(5000 + i)}, {});
      want.insert(hex_name(5000 + i));
    }
    std::set<std::string> got;
    size_t calls = 0;
    t.be->list(FileType::index, [&](const std::string& n, uint64_t) { got.insert(n), ++calls; });
    CHECK(got == want);
    CHECK(calls == want.size());  // each name once
  }
}

TEST_CASE("conformance: large objects, whole or not at all") {
  for (auto& t : targets()) {
    INFO(t.location);
    Bytes big = pattern(40u << 20, 7);  // above S3's multipart threshold
    Handle h{FileType::pack, hex_name(9000)};
    std::atomic<bool> done{false}, partial{false};
    std::thread watcher([&] {
      while (!done) {
        auto s = t.be->size(h);
        if (s && *s != big.size()) partial = true;
      }
    });
    t.be->save(h, big);
    done = true;
    watcher.join();
    CHECK_FALSE(partial);  // nobody saw a part of it
    CHECK(t.be->size(h) == big.size());
    CHECK(t.be->load(h) == big);
    // A range across S3's 16 MiB part boundary.
    uint64_t off = (16u << 20) - 1000;
    CHECK(t.be->load(h, off, 5000) == Bytes(big.begin() + off, big.begin() + off + 5000));
  }
}

TEST_CASE("conformance: exclusive create") {
  for (auto& t : targets()) {
    INFO(t.location);
    bool enforced = t.be->exclusive_create_enforced();
    if (!enforced) {
      bool expect = std::getenv("CAIRN_CONFORMANCE_EXPECT_EXCLUSIVE") != nullptr;
      WARN("'" << t.location << "' does not enforce exclusive create: claims are off there");
      CHECK_FALSE(expect);
      continue;
    }
    Handle h{FileType::claim, hex_name(7000)};
    CHECK(t.be->create_exclusive(h, pattern(10, 1)));
    CHECK_FALSE(t.be->create_exclusive(h, pattern(10, 2)));
    CHECK(t.be->load(h) == pattern(10, 1));  // the first one's bytes stay
    // Racing writers: exactly one wins each name.
    for (int round = 0; round < 5; ++round) {
      Handle r{FileType::claim, hex_name(7100 + round)};
      std::atomic<int> wins{0};
      std::vector<std::thread> ws;
      for (int w = 0; w < 6; ++w)
        ws.emplace_back([&, w] {
          if (t.be->create_exclusive(r, pattern(32, uint8_t(w)))) wins++;
        });
      for (auto& w : ws) w.join();
      CHECK(wins == 1);
    }
  }
}

TEST_CASE("conformance: create refuses an existing repository") {
  for (auto& t : targets()) {
    INFO(t.location);
    t.be->save({FileType::config, ""}, pattern(10, 1));
    try {
      t.be->create();
      FAIL("create() over a repository succeeded");
    } catch (const Error& e) {
      CHECK(e.code() == Errc::exists);
    }
  }
}
