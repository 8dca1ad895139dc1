#pragma once
// Maintenance mode during a restore (docs/configuration.md § maintenance):
// the HAProxy servers in front of a component are set to `maint` over the
// stats socket before its data is replaced, and put back to the state they
// had (ready, drain or maint) afterwards, whether the restore worked or not.
//
// What was changed is written to a journal (<state_dir>/maintenance.json)
// before the first server changes, so an agent that crashed mid-restore puts
// the servers back at its next start (recover()).
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace cairn::agent {

struct MaintenanceDecl {
  std::string stats_socket;  // HAProxy's admin-level stats socket (Unix path)
  std::string backend;
  std::vector<std::string> servers;
};

class MaintenanceMode {
 public:
  explicit MaintenanceMode(std::string journal_path) : journal_(std::move(journal_path)) {}

  // Records each server's forced state, then sets each to maint. Throws
  // cairn::Error naming the server and HAProxy's answer when it cannot; the
  // servers already changed are put back first.
  void enter(const std::string& component, const MaintenanceDecl& d);
  // Puts the component's servers back as enter() found them and forgets
  // them. Returns what could not be put back ("" when all was), never throws.
  std::string leave(const std::string& component);
  // Puts back everything the journal holds (an agent that stopped mid-restore).
  // Returns one line per component: what was put back or why not.
  std::vector<std::string> recover();

 private:
  struct Saved {
    MaintenanceDecl decl;
    std::map<std::string, std::string> previous;  // server -> ready, drain or maint
  };
  std::map<std::string, Saved> load() const;
  void save(const std::map<std::string, Saved>& all) const;
  std::string put_back(const Saved& s) const;

  std::string journal_;
  mutable std::mutex mu_;
};

}  // namespace cairn::agent
