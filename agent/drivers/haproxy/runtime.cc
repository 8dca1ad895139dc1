#include "agent/drivers/haproxy/runtime.h"

#include <algorithm>
#include <sstream>

#include "common/util/error.h"

namespace cairn::agent::haproxy {

namespace {

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> out;
  std::string l;
  std::istringstream in(text);
  while (std::getline(in, l)) {
    if (!l.empty() && l.back() == '\r') l.pop_back();
    out.push_back(l);
  }
  return out;
}

std::vector<std::string> split_ws(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

int to_int(const std::string& s, const std::string& what) {
  try {
    size_t pos = 0;
    long v = std::stol(s, &pos);
    if (pos != s.size()) throw std::invalid_argument(s);
    return static_cast<int>(v);
  } catch (const std::exception&) {
    throw Error(Errc::invalid_input, "'show servers state': " + what + " '" + s + "' is not a number");
  }
}

// Splits "a\ b c" at unescaped spaces, keeping the escapes.
std::vector<std::string> split_escaped(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  bool have = false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '\\' && i + 1 < s.size()) {
      cur += c;
      cur += s[++i];
      have = true;
      continue;
    }
    if (c == ' ' || c == '\t') {
      if (have) out.push_back(cur), cur.clear(), have = false;
      continue;
    }
    cur += c;
    have = true;
  }
  if (have) out.push_back(cur);
  return out;
}

}  // namespace

std::string ServerState::forced() const {
  if (admin_state & kAdminForcedMaint) return "maint";
  if (admin_state & kAdminForcedDrain) return "drain";
  return "ready";
}

std::vector<ServerState> parse_servers_state(const std::string& text) {
  auto lines = split_lines(text);
  size_t i = 0;
  while (i < lines.size() && split_ws(lines[i]).empty()) ++i;
  if (i >= lines.size()) throw Error(Errc::invalid_input, "'show servers state' answered nothing");
  if (split_ws(lines[i]) != std::vector<std::string>{"1"})
    throw Error(Errc::invalid_input, "'show servers state' is of version '" + lines[i] + "'; this agent reads version 1");
  ++i;
  std::map<std::string, size_t> col;
  std::vector<ServerState> out;
  for (; i < lines.size(); ++i) {
    auto w = split_ws(lines[i]);
    if (w.empty()) continue;
    if (w[0] == "#") {
      col.clear();
      for (size_t k = 1; k < w.size(); ++k) col[w[k]] = k - 1;
      continue;
    }
    if (w[0][0] == '#') continue;
    for (const char* need : {"be_name", "srv_name", "srv_admin_state", "srv_uweight", "srv_op_state"})
      if (!col.count(need)) throw Error(Errc::invalid_input, std::string("'show servers state' has no column '") + need + "'");
    auto at = [&](const char* c) -> const std::string& {
      size_t k = col[c];
      if (k >= w.size())
        throw Error(Errc::invalid_input, "'show servers state': line '" + lines[i] + "' has fewer columns than its header");
      return w[k];
    };
    ServerState s;
    s.backend = at("be_name");
    s.server = at("srv_name");
    s.admin_state = to_int(at("srv_admin_state"), "srv_admin_state");
    s.weight = to_int(at("srv_uweight"), "srv_uweight");
    s.op_state = to_int(at("srv_op_state"), "srv_op_state");
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<TableInfo> parse_table_list(const std::string& text) {
  std::vector<TableInfo> out;
  for (const auto& l : split_lines(text)) {
    const std::string p = "# table: ";
    if (l.rfind(p, 0) != 0) continue;
    size_t comma = l.find(", type: ", p.size());
    if (comma == std::string::npos) continue;
    TableInfo t;
    t.name = l.substr(p.size(), comma - p.size());
    size_t tb = comma + 8;
    size_t te = l.find(',', tb);
    t.type = l.substr(tb, te == std::string::npos ? std::string::npos : te - tb);
    out.push_back(t);
  }
  return out;
}

std::vector<TableEntry> parse_table_dump(const std::string& text) {
  std::vector<TableEntry> out;
  for (const auto& l : split_lines(text)) {
    if (l.empty() || l[0] == '#') continue;
    size_t colon = l.find(": ");
    if (colon == std::string::npos || l.compare(0, 2, "0x") != 0) continue;
    auto words = split_escaped(l.substr(colon + 2));
    TableEntry e;
    bool have_key = false;
    for (const auto& w : words) {
      size_t eq = w.find('=');
      if (eq == std::string::npos) continue;
      std::string name = w.substr(0, eq), value = w.substr(eq + 1);
      if (name == "key")
        e.key = value, have_key = true;
      else if (name == "use" || name == "exp" || name == "shard")
        continue;
      else
        e.data.emplace_back(name, value);
    }
    if (have_key) out.push_back(std::move(e));
  }
  return out;
}

std::vector<std::string> parse_map_list(const std::string& text) {
  std::vector<std::string> out;
  for (const auto& l : split_lines(text)) {
    if (l.empty() || l[0] == '#') continue;
    size_t b = l.find(" (");
    size_t e = l.find(") ", b == std::string::npos ? 0 : b);
    if (b == std::string::npos || e == std::string::npos) continue;
    std::string f = l.substr(b + 2, e - b - 2);
    if (!f.empty() && std::find(out.begin(), out.end(), f) == out.end()) out.push_back(f);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> parse_map_dump(const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& l : split_lines(text)) {
    if (l.compare(0, 2, "0x") != 0) continue;
    size_t a = l.find(' ');
    if (a == std::string::npos) continue;
    size_t kb = a + 1;
    size_t ke = l.find(' ', kb);
    if (ke == std::string::npos) {
      out.emplace_back(l.substr(kb), "");
      continue;
    }
    out.emplace_back(l.substr(kb, ke - kb), l.substr(ke + 1));
  }
  return out;
}

std::map<std::string, std::string> parse_info(const std::string& text) {
  std::map<std::string, std::string> out;
  for (const auto& l : split_lines(text)) {
    size_t c = l.find(": ");
    if (c == std::string::npos) continue;
    out[l.substr(0, c)] = l.substr(c + 2);
  }
  return out;
}

std::string cli_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == ' ' || c == '\t' || c == ';' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

std::vector<std::string> server_commands(const ServerState& s) {
  std::string name = cli_escape(s.backend + "/" + s.server);
  return {"set server " + name + " weight " + std::to_string(s.weight), "set server " + name + " state " + s.forced()};
}

std::vector<std::string> table_commands(const std::string& table, const TableEntry& e) {
  std::vector<std::string> out;
  for (const auto& [name, value] : e.data) {
    // Dictionary types hold a server's name; the CLI cannot set them.
    if (name == "server_key" || name == "server_name") continue;
    // "http_req_rate(10000)": the period is the table's, not part of the type.
    std::string type = name.substr(0, name.find('('));
    out.push_back("set table " + cli_escape(table) + " key " + e.key + " data." + type + " " + cli_escape(value));
  }
  return out;
}

std::vector<std::string> map_commands(const std::string& file, const std::vector<std::pair<std::string, std::string>>& saved,
                                      const std::vector<std::pair<std::string, std::string>>& current) {
  std::map<std::string, std::string> cur(current.begin(), current.end()), want;
  std::vector<std::string> out;
  std::string f = cli_escape(file);
  for (const auto& [k, v] : saved) {
    if (want.count(k)) continue;  // a key twice: the first one is what a lookup finds
    want[k] = v;
    auto it = cur.find(k);
    if (it == cur.end())
      out.push_back("add map " + f + " " + cli_escape(k) + " " + cli_escape(v));
    else if (it->second != v)
      out.push_back("set map " + f + " " + cli_escape(k) + " " + cli_escape(v));
  }
  for (const auto& [k, v] : cur)
    if (!want.count(k)) out.push_back("del map " + f + " " + cli_escape(k));
  return out;
}

bool cli_ok(const std::string& reply) {
  return std::all_of(reply.begin(), reply.end(), [](char c) { return c == '\n' || c == '\r' || c == ' '; });
}

nlohmann::json runtime_to_json(const RuntimeState& r) {
  nlohmann::json j;
  j["format"] = 1;
  j["servers_state"] = r.servers_state;
  auto& t = j["tables"] = nlohmann::json::array();
  for (const auto& [info, entries] : r.tables) {
    nlohmann::json e = nlohmann::json::array();
    for (const auto& en : entries) {
      nlohmann::json d = nlohmann::json::array();
      for (const auto& [k, v] : en.data) d.push_back({k, v});
      e.push_back({{"key", en.key}, {"data", d}});
    }
    t.push_back({{"name", info.name}, {"type", info.type}, {"entries", e}});
  }
  auto& m = j["maps"] = nlohmann::json::array();
  for (const auto& [file, entries] : r.maps) {
    nlohmann::json e = nlohmann::json::array();
    for (const auto& [k, v] : entries) e.push_back({k, v});
    m.push_back({{"file", file}, {"entries", e}});
  }
  return j;
}

RuntimeState runtime_from_json(const nlohmann::json& j) {
  try {
    if (j.at("format").get<int>() != 1) throw Error(Errc::unsupported, "runtime.json is of an unknown format");
    RuntimeState r;
    r.servers_state = j.at("servers_state").get<std::string>();
    for (const auto& t : j.at("tables")) {
      TableInfo info{t.at("name").get<std::string>(), t.at("type").get<std::string>()};
      std::vector<TableEntry> entries;
      for (const auto& e : t.at("entries")) {
        TableEntry en;
        en.key = e.at("key").get<std::string>();
        for (const auto& d : e.at("data")) en.data.emplace_back(d.at(0).get<std::string>(), d.at(1).get<std::string>());
        entries.push_back(std::move(en));
      }
      r.tables.emplace_back(info, std::move(entries));
    }
    for (const auto& m : j.at("maps")) {
      std::vector<std::pair<std::string, std::string>> entries;
      for (const auto& e : m.at("entries")) entries.emplace_back(e.at(0).get<std::string>(), e.at(1).get<std::string>());
      r.maps.emplace_back(m.at("file").get<std::string>(), std::move(entries));
    }
    return r;
  } catch (const nlohmann::json::exception& e) {
    throw Error(Errc::invalid_input, std::string("runtime.json does not parse: ") + e.what());
  }
}

AppliedRuntime apply_runtime(const RuntimeState& saved, const std::function<std::string(const std::string&)>& cli) {
  AppliedRuntime out;
  auto run = [&](const std::string& cmd) {
    ++out.commands;
    try {
      std::string reply = cli(cmd);
      if (!cli_ok(reply)) {
        std::string r = reply.substr(0, 300);
        while (!r.empty() && (r.back() == '\n' || r.back() == ' ')) r.pop_back();
        out.problems.emplace_back("haproxy refused '" + cmd + "': " + r, "");
      }
    } catch (const Error& e) {
      out.problems.emplace_back("'" + cmd + "' failed: " + e.what(), "");
    }
  };
  try {
    out.servers = parse_servers_state(saved.servers_state);
    for (const auto& s : out.servers)
      for (const auto& c : server_commands(s)) run(c);
  } catch (const Error& e) {
    out.problems.emplace_back(std::string("the saved servers state cannot be read: ") + e.what(), "");
  }
  for (const auto& [t, entries] : saved.tables)
    for (const auto& e : entries)
      for (const auto& c : table_commands(t.name, e)) run(c);
  for (const auto& [file, entries] : saved.maps) {
    try {
      for (const auto& c : map_commands(file, entries, parse_map_dump(cli("show map " + cli_escape(file))))) run(c);
    } catch (const Error& e) {
      out.problems.emplace_back("map '" + file + "' cannot be read back: " + e.what(), file);
    }
  }
  return out;
}

}  // namespace cairn::agent::haproxy
