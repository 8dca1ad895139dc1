// HAProxy maintenance mode around a restore (maintenance_mode.h).
#include "agent/maintenance_mode.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "agent/drivers/haproxy/runtime.h"
#include "agent/platform/socket_client.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent {
namespace {

std::string ask(const std::string& socket, const std::string& command) {
  platform::SocketAddress a;
  a.unix_path = socket;
  return platform::socket_exchange(a, command + "\n", std::chrono::seconds(10));
}

void set_state(const MaintenanceDecl& d, const std::string& server, const std::string& state) {
  std::string cmd = "set server " + haproxy::cli_escape(d.backend + "/" + server) + " state " + state;
  std::string reply = ask(d.stats_socket, cmd);
  if (!haproxy::cli_ok(reply)) {
    while (!reply.empty() && (reply.back() == '\n' || reply.back() == ' ')) reply.pop_back();
    throw Error(Errc::io, "haproxy refused '" + cmd + "': " + reply);
  }
}

}  // namespace

std::map<std::string, MaintenanceMode::Saved> MaintenanceMode::load() const {
  std::map<std::string, Saved> out;
  struct stat st {};
  if (::stat(journal_.c_str(), &st) != 0) return out;
  auto bytes = read_file(journal_);
  auto j = nlohmann::json::parse(bytes.begin(), bytes.end(), nullptr, false);
  if (!j.is_object()) throw Error(Errc::corrupt, "maintenance journal '" + journal_ + "' does not parse");
  for (const auto& [component, e] : j.items()) {
    Saved s;
    s.decl.stats_socket = e.value("stats_socket", "");
    s.decl.backend = e.value("backend", "");
    if (e.contains("previous") && e["previous"].is_object())
      for (const auto& [server, state] : e["previous"].items()) {
        s.decl.servers.push_back(server);
        s.previous[server] = state.is_string() ? state.get<std::string>() : "ready";
      }
    out[component] = std::move(s);
  }
  return out;
}

void MaintenanceMode::save(const std::map<std::string, Saved>& all) const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [component, s] : all)
    j[component] = {{"stats_socket", s.decl.stats_socket}, {"backend", s.decl.backend}, {"previous", s.previous}};
  std::string text = j.dump(2) + "\n";
  write_file_atomic(journal_, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()), 0600);
}

void MaintenanceMode::enter(const std::string& component, const MaintenanceDecl& d) {
  std::lock_guard g(mu_);
  auto states = haproxy::parse_servers_state(ask(d.stats_socket, "show servers state " + haproxy::cli_escape(d.backend)));
  Saved s;
  s.decl = d;
  for (const auto& server : d.servers) {
    auto it = std::find_if(states.begin(), states.end(),
                           [&](const haproxy::ServerState& x) { return x.backend == d.backend && x.server == server; });
    if (it == states.end())
      throw Error(Errc::not_found, "maintenance mode: haproxy has no server '" + server + "' in backend '" + d.backend + "' (socket " +
                                       d.stats_socket + "); nothing was changed");
    s.previous[server] = it->forced();
  }
  auto all = load();
  all[component] = s;
  save(all);  // before the first change: a crash from here on is undone at the next start
  std::vector<std::string> done;
  try {
    for (const auto& server : d.servers) {
      set_state(d, server, "maint");
      done.push_back(server);
    }
  } catch (const Error& e) {
    for (const auto& server : done) {
      try {
        set_state(d, server, s.previous[server]);
      } catch (const Error&) {
      }
    }
    all.erase(component);
    save(all);
    throw Error(e.code(), std::string("maintenance mode: ") + e.what() + "; the servers already changed were put back");
  }
  spdlog::info("component '{}': haproxy backend '{}' servers set to maint for the restore", component, d.backend);
}

std::string MaintenanceMode::put_back(const Saved& s) const {
  std::string problems;
  for (const auto& server : s.decl.servers) {
    try {
      set_state(s.decl, server, s.previous.at(server));
    } catch (const std::exception& e) {
      problems += (problems.empty() ? "" : "; ") + std::string(e.what());
    }
  }
  return problems;
}

std::string MaintenanceMode::leave(const std::string& component) {
  std::lock_guard g(mu_);
  try {
    auto all = load();
    auto it = all.find(component);
    if (it == all.end()) return {};
    std::string problems = put_back(it->second);
    if (!problems.empty()) return "maintenance mode: could not put the servers back: " + problems;
    all.erase(it);
    save(all);
    spdlog::info("component '{}': haproxy servers put back as they were", component);
    return {};
  } catch (const std::exception& e) {
    return std::string("maintenance mode: ") + e.what();
  }
}

std::vector<std::string> MaintenanceMode::recover() {
  std::lock_guard g(mu_);
  std::vector<std::string> out;
  auto all = load();
  for (auto it = all.begin(); it != all.end();) {
    std::string problems = put_back(it->second);
    if (problems.empty()) {
      out.push_back("component '" + it->first + "': haproxy servers of backend '" + it->second.decl.backend +
                    "' left in maint by an interrupted restore were put back");
      it = all.erase(it);
    } else {
      out.push_back("component '" + it->first + "': haproxy servers left in maint could not be put back yet: " + problems);
      ++it;
    }
  }
  if (!out.empty()) save(all);
  return out;
}

}  // namespace cairn::agent
