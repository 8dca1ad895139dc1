#pragma once
// Strict reading of one TOML table: every key must be read by someone, so an
// unknown key (a typo, a setting from a newer version) is refused with the
// file and line where it stands instead of being silently ignored.
#include <toml++/toml.h>

#include <cstdint>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace cairn::agent {

// A refused configuration: "FILE:LINE: reason".
class ConfigError : public std::runtime_error {
 public:
  ConfigError(const std::string& file, uint32_t line, const std::string& reason);
  const std::string& file() const { return file_; }
  uint32_t line() const { return line_; }
  const std::string& reason() const { return reason_; }

 private:
  std::string file_;
  uint32_t line_;
  std::string reason_;
};

class TableReader {
 public:
  // where: how the table is named in messages, e.g. "[controller]".
  TableReader(const toml::table& t, std::string file, std::string where);

  std::optional<std::string> string(const std::string& key);
  std::string string_or(const std::string& key, const std::string& def);
  std::string required_string(const std::string& key);
  std::optional<int64_t> integer(const std::string& key, int64_t min, int64_t max);
  std::optional<bool> boolean(const std::string& key);
  // A string or an array of strings; nullopt when missing.
  std::optional<std::vector<std::string>> string_list(const std::string& key);
  // The table under key (e.g. a driver's settings); nullptr when missing.
  const toml::table* table(const std::string& key);
  // Marks key as handled by the caller, who reads it from the table itself.
  const toml::node* take(const std::string& key) { return get(key); }

  // Refuses every key no reader asked for.
  void finish() const;

  // Line of key, or of the table when the key is missing.
  uint32_t line_of(const std::string& key) const;
  uint32_t line() const;
  [[noreturn]] void fail(const std::string& key, const std::string& reason) const;
  const std::string& file() const { return file_; }
  const std::string& where() const { return where_; }

 private:
  const toml::node* get(const std::string& key);

  const toml::table& t_;
  std::string file_;
  std::string where_;
  std::set<std::string> used_;
};

// Refuses a value that is not an absolute path ("'v' must be an absolute path").
void require_absolute(TableReader& r, const std::string& key, const std::string& v);

}  // namespace cairn::agent
