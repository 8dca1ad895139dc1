#pragma once
// What the opensearch driver's files share (opensearch_driver.cc, restore.cc):
// a named namespace, not an anonymous one (the sanitizer build is a unity
// build, where every file's anonymous namespace is one).
#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace cairn::agent::opensearch::detail {

inline constexpr std::chrono::milliseconds kRestoreTimeout = std::chrono::hours(6);
inline constexpr std::chrono::seconds kHealthTimeout{600};
// The restore's plan, in its staging directory (recover_interrupted_restore reads it).
inline constexpr const char* kPlanFile = "cairn-restore-plan.json";
inline constexpr size_t kNamesPerRequest = 40;  // index names joined in one URL

std::string lower(std::string s);
// Whether `name` is one an index pattern list takes ("*" any run; a leading
// '-' excludes; a dot-index only by a pattern that starts with '.', as the
// server expands a wildcard).
bool matches(const std::vector<std::string>& patterns, const std::string& name);
// names in groups of kNamesPerRequest.
std::vector<std::vector<std::string>> chunks(const std::vector<std::string>& names);
// A _cat column's value as a number; -1 when it is none.
int64_t as_int(const nlohmann::json& v);

}  // namespace cairn::agent::opensearch::detail
