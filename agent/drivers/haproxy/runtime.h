#pragma once
// HAProxy's runtime state as its stats socket prints it (haproxy 2.6), and the
// commands that set it back. Pure text in, text out: the driver does the I/O.
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace cairn::agent::haproxy {

// srv_admin_state bits (haproxy's include/haproxy/server-t.h).
inline constexpr int kAdminForcedMaint = 0x01;
inline constexpr int kAdminForcedDrain = 0x08;

struct ServerState {
  std::string backend, server;
  int admin_state = 0;  // srv_admin_state
  int weight = 0;       // srv_uweight (the weight set by the operator)
  int op_state = 0;
  // The forced (operator-set) part of the admin state: maint, drain or ready.
  std::string forced() const;
};

// "show servers state": version line "1", a '#' header naming the columns,
// one line per server. Throws cairn::Error(invalid_input) on another version
// or a line that does not match the header.
std::vector<ServerState> parse_servers_state(const std::string& text);

struct TableInfo {
  std::string name, type;
};
// "show table": "# table: NAME, type: TYPE, size:N, used:N" per table.
std::vector<TableInfo> parse_table_list(const std::string& text);

struct TableEntry {
  std::string key;                                        // as printed (string keys escaped for the CLI)
  std::vector<std::pair<std::string, std::string>> data;  // "gpc0"="3", "http_req_rate(10000)"="4"
};
// "show table NAME": "0x...: key=K use=N exp=N [shard=N] name=value ...".
std::vector<TableEntry> parse_table_dump(const std::string& text);

// "show map": the map files loaded ("ID (FILE) description").
std::vector<std::string> parse_map_list(const std::string& text);
// "show map FILE": "0x... KEY VALUE" (the key is the first word, the value
// the rest of the line).
std::vector<std::pair<std::string, std::string>> parse_map_dump(const std::string& text);

// "show info": "Name: value" lines.
std::map<std::string, std::string> parse_info(const std::string& text);

// A CLI argument: space, tab, ';' and backslash escaped with a backslash.
std::string cli_escape(const std::string& s);

// The commands that give a server its saved weight and forced state.
std::vector<std::string> server_commands(const ServerState& s);
// "set table T key K data.TYPE V" per settable data type of the entry
// (dictionary types such as server_key are not settable and are skipped).
std::vector<std::string> table_commands(const std::string& table, const TableEntry& e);
// The commands that turn a map's current entries into the saved ones.
std::vector<std::string> map_commands(const std::string& file, const std::vector<std::pair<std::string, std::string>>& saved,
                                      const std::vector<std::pair<std::string, std::string>>& current);

// True when the reply of a set/add/del command reports success (haproxy
// answers those with an empty line).
bool cli_ok(const std::string& reply);

// The runtime state kept in a snapshot (runtime.json).
struct RuntimeState {
  std::string servers_state;  // the raw "show servers state" text (what a server-state-file holds)
  std::vector<std::pair<TableInfo, std::vector<TableEntry>>> tables;
  std::vector<std::pair<std::string, std::vector<std::pair<std::string, std::string>>>> maps;
};
nlohmann::json runtime_to_json(const RuntimeState& r);

// Sets saved runtime state back through `cli` (one stats-socket command in,
// its reply out; throws cairn::Error when the socket fails): servers'
// weights and forced states, stick-table entries, then each map until its
// entries are the saved ones. A restore's last step and a drill's.
struct AppliedRuntime {
  size_t commands = 0;
  std::vector<ServerState> servers;  // the saved servers, as parsed
  // What was refused or failed: the message and the item it names ("" or a map file).
  std::vector<std::pair<std::string, std::string>> problems;
};
AppliedRuntime apply_runtime(const RuntimeState& saved, const std::function<std::string(const std::string&)>& cli);
RuntimeState runtime_from_json(const nlohmann::json& j);  // throws cairn::Error(invalid_input)

}  // namespace cairn::agent::haproxy
