#include "agent/config_reader.h"

namespace cairn::agent {

namespace {
const char* type_name(toml::node_type t) {
  switch (t) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a number";
    case toml::node_type::boolean:
      return "a boolean";
    default:
      return "a date or time";
  }
}
}  // namespace

ConfigError::ConfigError(const std::string& file, uint32_t line, const std::string& reason)
    : std::runtime_error(file + ":" + std::to_string(line) + ": " + reason), file_(file), line_(line), reason_(reason) {}

TableReader::TableReader(const toml::table& t, std::string file, std::string where)
    : t_(t), file_(std::move(file)), where_(std::move(where)) {}

uint32_t TableReader::line() const { return t_.source().begin.line; }

uint32_t TableReader::line_of(const std::string& key) const {
  const toml::node* n = t_.get(key);
  return n ? n->source().begin.line : line();
}

void TableReader::fail(const std::string& key, const std::string& reason) const {
  throw ConfigError(file_, line_of(key), "'" + key + "' in " + where_ + ": " + reason);
}

const toml::node* TableReader::get(const std::string& key) {
  used_.insert(key);
  return t_.get(key);
}

std::optional<std::string> TableReader::string(const std::string& key) {
  const toml::node* n = get(key);
  if (!n) return std::nullopt;
  if (!n->is_string()) fail(key, std::string("must be a string, not ") + type_name(n->type()));
  return n->as_string()->get();
}

std::string TableReader::string_or(const std::string& key, const std::string& def) {
  auto v = string(key);
  return v ? *v : def;
}

std::string TableReader::required_string(const std::string& key) {
  auto v = string(key);
  if (!v) throw ConfigError(file_, line(), where_ + " needs '" + key + "'");
  if (v->empty()) fail(key, "must not be empty");
  return *v;
}

std::optional<int64_t> TableReader::integer(const std::string& key, int64_t min, int64_t max) {
  const toml::node* n = get(key);
  if (!n) return std::nullopt;
  if (!n->is_integer()) fail(key, std::string("must be an integer, not ") + type_name(n->type()));
  int64_t v = n->as_integer()->get();
  if (v < min || v > max) fail(key, std::to_string(v) + " is out of range (" + std::to_string(min) + " to " + std::to_string(max) + ")");
  return v;
}

std::optional<bool> TableReader::boolean(const std::string& key) {
  const toml::node* n = get(key);
  if (!n) return std::nullopt;
  if (!n->is_boolean()) fail(key, std::string("must be true or false, not ") + type_name(n->type()));
  return n->as_boolean()->get();
}

std::optional<std::vector<std::string>> TableReader::string_list(const std::string& key) {
  const toml::node* n = get(key);
  if (!n) return std::nullopt;
  if (n->is_string()) return std::vector<std::string>{n->as_string()->get()};
  if (!n->is_array()) fail(key, std::string("must be a string or an array of strings, not ") + type_name(n->type()));
  std::vector<std::string> out;
  for (const auto& e : *n->as_array()) {
    if (!e.is_string())
      throw ConfigError(file_, e.source().begin.line,
                        "'" + key + "' in " + where_ + ": every entry must be a string, not " + type_name(e.type()));
    out.push_back(e.as_string()->get());
  }
  return out;
}

const toml::table* TableReader::table(const std::string& key) {
  const toml::node* n = get(key);
  if (!n) return nullptr;
  if (!n->is_table()) fail(key, std::string("must be a table, not ") + type_name(n->type()));
  return n->as_table();
}

void TableReader::finish() const {
  for (const auto& [k, v] : t_) {
    std::string key(k.str());
    if (!used_.count(key)) throw ConfigError(file_, v.source().begin.line, "unknown key '" + key + "' in " + where_);
  }
}

void require_absolute(TableReader& r, const std::string& key, const std::string& v) {
  if (v.empty() || v[0] != '/') r.fail(key, "'" + v + "' must be an absolute path");
}

}  // namespace cairn::agent
