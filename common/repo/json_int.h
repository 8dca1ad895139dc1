#pragma once
// Integers from JSON read out of a repository (key slots, config, locks). A
// number that is not an integer, or does not fit T, is damage: nlohmann's
// get<int>() of 1e80 is a float-to-int conversion out of range, undefined
// behaviour (found by fuzz_key_slot).
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "common/util/error.h"

namespace cairn::repo {

template <class T>
T json_int(const nlohmann::json& v, const char* key) {
  auto bad = [&] { return Error(Errc::corrupt, std::string("'") + key + "' is not an integer in range"); };
  if (!v.is_number_integer()) throw bad();
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (!std::in_range<T>(u)) throw bad();
    return T(u);
  }
  int64_t s = v.get<int64_t>();
  if (!std::in_range<T>(s)) throw bad();
  return T(s);
}

template <class T>
T json_int(const nlohmann::json& obj, const char* key, T fallback) {
  auto it = obj.find(key);
  return it == obj.end() ? fallback : json_int<T>(*it, key);
}

template <class T>
T json_int_at(const nlohmann::json& obj, const char* key) {
  return json_int<T>(obj.at(key), key);
}

}  // namespace cairn::repo
