#pragma once
// A catalog in a temp dir with a clock the test moves by hand.
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "controller/catalog/catalog.h"

namespace cairn::catalog::test {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "cairn-catalog-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

struct Fixture {
  TempDir dir;
  std::shared_ptr<int64_t> clock = std::make_shared<int64_t>(1'700'000'000'000);
  Catalog cat = open();

  Catalog open() {
    CatalogOptions o;
    auto c = clock;
    o.clock_ms = [c] { return *c; };
    return Catalog::open(dir.file("catalog.db"), o);
  }
  void advance_seconds(int64_t s) { *clock += s * 1000; }
  int64_t now() const { return *clock / 1000; }

  size_t audit_count() {
    return cat.read([](const Tx& tx) { return tx.audit_events().size(); });
  }

  // An approved agent named `name`, its key filled with `fill`.
  std::string approved_agent(const std::string& name, uint8_t fill) {
    CurveKey key{};
    key.fill(fill);
    return cat.transaction("operator:test", [&](Tx& tx) {
      auto id = tx.enrol_agent(name, key, name + ".local", "0.1.0");
      tx.set_agent_state(id, AgentState::approved);
      return id;
    });
  }
};

inline Reason reason(ErrorCode code, std::string detail) { return Reason{code, std::move(detail), ""}; }

}  // namespace cairn::catalog::test
