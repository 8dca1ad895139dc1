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
  std::string unit;                        // e.g. "etcd.service"; used when no commands are declared
  std::vector<std::string> start_command;  // argv; each, when set, replaces the systemd call
  std::vector<std::string> stop_command;
  std::vector<std::string> reload_command;
  // Kills the service at once (SIGKILL), for a stop that did not finish in
  // kill_after; a unit is killed through systemd (KillUnit) without one.
  std::vector<std::string> kill_command;
  std::chrono::milliseconds timeout{120'000};
  // 0: a stop is never escalated (it fails at `timeout`). Otherwise a stop
  // not finished after kill_after is escalated to SIGKILL (docs/agent-config.md
  // § service).
  std::chrono::milliseconds kill_after{0};
  bool empty() const { return unit.empty() && start_command.empty() && stop_command.empty(); }
  std::string describe() const;  // "systemd unit 'etcd.service'" or "command 'ctl start'"
};

// What a driver is about to ask of the service (for Service::problem).
enum class ServiceUse { stop_start, reload };

// How a stop ended: cleanly, or escalated to SIGKILL after kill_after.
struct StopOutcome {
  bool killed = false;
  std::string detail;  // what was killed and why, for the task's notes; "" when not killed
};

class Service {
 public:
  explicit Service(ServiceDecl decl);
  // Each throws cairn::Error (Errc::io) with the reason (systemd's error, the
  // command's exit status and the last line of its stderr, a timeout).
  // A stop not finished after decl().kill_after (when set and a kill is
  // declared) is escalated: kill() then waits for the stop to end.
  StopOutcome stop(const std::atomic<bool>* cancel = nullptr) const;
  // SIGKILL now: systemd's KillUnit(unit, "all", SIGKILL) then waits (30 s at
  // most) until the unit is inactive or failed, or the declared kill_command.
  // Throws Error(invalid_input) when neither is declared.
  void kill(const std::atomic<bool>* cancel = nullptr) const;
  // Whether kill() has a way to kill (a kill_command, or a unit).
  bool can_kill() const;
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
