#pragma once
// Stops, starts and reloads a component's service: through systemd's D-Bus API
// (org.freedesktop.systemd1.Manager StopUnit/StartUnit/ReloadUnit, waiting for
// the job to finish and checking the unit's ActiveState) when a unit is
// declared, or through commands declared in the agent's configuration (tests,
// hosts without systemd). Never from a plan: the component's settings decide.
#include <atomic>
#include <chrono>
#include <string>
#include <vector>

namespace cairn::agent::platform {

struct ServiceDecl {
  std::string unit;                       // e.g. "etcd.service"; used when no commands are declared
  std::vector<std::string> start_command;  // argv; each, when set, replaces the systemd call
  std::vector<std::string> stop_command;
  std::vector<std::string> reload_command;
  std::chrono::milliseconds timeout{120'000};
  bool empty() const { return unit.empty() && start_command.empty() && stop_command.empty(); }
  std::string describe() const;  // "systemd unit 'etcd.service'" or "command 'ctl start'"
};

// What a driver is about to ask of the service (for Service::problem).
enum class ServiceUse { stop_start, reload };

class Service {
 public:
  explicit Service(ServiceDecl decl);
  // Each throws cairn::Error (Errc::io) with the reason (systemd's error, the
  // command's exit status and the last line of its stderr, a timeout).
  void stop(const std::atomic<bool>* cancel = nullptr) const;
  void start(const std::atomic<bool>* cancel = nullptr) const;
  // reload_command when declared; other commands declared: stop_command then
  // start_command; a unit alone: systemd's ReloadUnit (the unit's ExecReload).
  void reload(const std::atomic<bool>* cancel = nullptr) const;
  // Why the declared service cannot serve `use` now, or "" when it can; reads
  // state only, changes nothing (preflight). Nothing declared for `use`; a
  // command's program missing or not executable; no system bus; a unit that
  // systemd does not know, that is masked or fails to load; reload asked of a
  // unit without ExecReload. Whether systemd will let the agent manage the
  // unit (root or polkit) is only known when it asks.
  std::string problem(ServiceUse use) const;
  const ServiceDecl& decl() const { return decl_; }

 private:
  ServiceDecl decl_;
};

}  // namespace cairn::agent::platform
