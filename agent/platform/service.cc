#include "agent/platform/service.h"

#include <systemd/sd-bus.h>

#include <csignal>
#include <cstring>
#include <memory>
#include <optional>
#include <thread>

#include "agent/platform/process.h"
#include "common/util/error.h"

namespace cairn::agent::platform {

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kDest = "org.freedesktop.systemd1";
constexpr const char* kPath = "/org/freedesktop/systemd1";
constexpr const char* kManager = "org.freedesktop.systemd1.Manager";
constexpr const char* kUnit = "org.freedesktop.systemd1.Unit";

std::string join(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

// ---- declared commands -------------------------------------------------

void run_declared(const ServiceDecl& d, const char* action, const std::vector<std::string>& argv, const std::atomic<bool>* cancel) {
  ProcessSpec spec;
  spec.argv = argv;
  spec.timeout = d.timeout;
  spec.cancel = cancel;
  ProcessResult r = run_process(spec);
  if (!r.ok())
    throw Error(r.cancelled ? Errc::interrupted : Errc::io, std::string(action) + " command '" + join(argv) + "' " + r.describe());
}

// ---- systemd over D-Bus -------------------------------------------------
//
// The bus is the system bus sd-bus finds ($DBUS_SYSTEM_BUS_ADDRESS, else
// /run/dbus/system_bus_socket). cairn's test machines do not boot systemd:
// tests/unit/agent_platform/service_test.cc and
// tests/integration/test_systemd.py point that variable at a private
// `systemd --user` manager (tests/integration/servers_systemd.py), which
// serves the same org.freedesktop.systemd1 API.

struct BusError {
  sd_bus_error e = SD_BUS_ERROR_NULL;
  ~BusError() { sd_bus_error_free(&e); }
  std::string text(int r) const {
    if (sd_bus_error_is_set(&e)) return e.message ? e.message : e.name;
    return std::strerror(-r);
  }
  bool access_denied() const {
    return sd_bus_error_has_name(&e, SD_BUS_ERROR_ACCESS_DENIED) ||
           sd_bus_error_has_name(&e, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED);
  }
};

using BusPtr = std::unique_ptr<sd_bus, decltype(&sd_bus_flush_close_unref)>;
using MsgPtr = std::unique_ptr<sd_bus_message, decltype(&sd_bus_message_unref)>;
using SlotPtr = std::unique_ptr<sd_bus_slot, decltype(&sd_bus_slot_unref)>;

struct JobWait {
  std::string job_path;
  std::string result;  // set by JobRemoved
  bool done = false;
};

int on_job_removed(sd_bus_message* m, void* user, sd_bus_error*) {
  auto* w = static_cast<JobWait*>(user);
  uint32_t id = 0;
  const char *path = nullptr, *unit = nullptr, *result = nullptr;
  if (sd_bus_message_read(m, "uoss", &id, &path, &unit, &result) < 0) return 0;
  if (path && w->job_path == path) {
    w->result = result ? result : "";
    w->done = true;
  }
  return 0;
}

class Systemd {
 public:
  explicit Systemd(const ServiceDecl& d) : d_(d), bus_(nullptr, &sd_bus_flush_close_unref) {
    sd_bus* b = nullptr;
    int r = sd_bus_open_system(&b);
    if (r < 0)
      throw Error(Errc::io, "systemd unit '" + d.unit + "': cannot connect to the system bus (" + std::strerror(-r) +
                                "): is systemd running on this host? Without systemd, declare the "
                                "component's service start_command and stop_command instead");
    bus_.reset(b);
  }

  // Runs Manager.<method>(unit, "replace"), waits for its job to end and checks
  // the unit's ActiveState against `want` (any of them).
  // kill_after > 0: a job still running then has the unit killed
  // (kill_unit) once, and is waited for 30 s more at least.
  void run_job(const char* method, const char* verb, std::initializer_list<const char*> want, const std::atomic<bool>* cancel,
               std::chrono::milliseconds kill_after = {}, bool* killed = nullptr) {
    const std::string what = "systemd unit '" + d_.unit + "'";
    const auto start = Clock::now();
    auto deadline = start + d_.timeout;
    if (kill_after.count() > 0) deadline = std::max(deadline, start + kill_after + std::chrono::seconds(30));
    JobWait w;
    // Subscribe and match before the call: the job may end before the reply is read.
    sd_bus_slot* s = nullptr;
    int r = sd_bus_match_signal(bus_.get(), &s, kDest, kPath, kManager, "JobRemoved", &on_job_removed, &w);
    if (r < 0) throw Error(Errc::io, what + ": cannot watch systemd's jobs: " + std::strerror(-r));
    SlotPtr slot(s, &sd_bus_slot_unref);
    {
      BusError err;
      r = sd_bus_call_method(bus_.get(), kDest, kPath, kManager, "Subscribe", &err.e, nullptr, "");
      if (r < 0) throw Error(Errc::io, what + ": cannot subscribe to systemd's jobs: " + err.text(r));
    }
    {
      BusError err;
      sd_bus_message* reply = nullptr;
      r = sd_bus_call_method(bus_.get(), kDest, kPath, kManager, method, &err.e, &reply, "ss", d_.unit.c_str(), "replace");
      MsgPtr rp(reply, &sd_bus_message_unref);
      if (r < 0) {
        std::string why = err.text(r);
        if (err.access_denied()) why += " (the agent may not manage units: run it as root or allow it through polkit)";
        throw Error(Errc::io, what + ": " + verb + " refused by systemd: " + why);
      }
      const char* job = nullptr;
      r = sd_bus_message_read(reply, "o", &job);
      if (r < 0 || !job) throw Error(Errc::io, what + ": systemd's reply to " + method + " has no job");
      w.job_path = job;
    }
    while (!w.done) {
      r = sd_bus_process(bus_.get(), nullptr);
      if (r < 0) throw Error(Errc::io, what + ": lost the system bus while waiting to " + verb + ": " + std::strerror(-r));
      if (r > 0) continue;
      if (cancel && cancel->load())
        throw Error(Errc::interrupted, what + ": cancelled while waiting for systemd to " + verb + " it (the job goes on in systemd)");
      if (kill_after.count() > 0 && killed && !*killed && Clock::now() - start >= kill_after) {
        kill_unit();
        *killed = true;
      }
      auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now());
      if (left.count() <= 0)
        throw Error(Errc::io, what + ": systemd did not finish the " + verb + " job within " + std::to_string(d_.timeout.count() / 1000) +
                                  " s (see 'systemctl status " + d_.unit + "')");
      sd_bus_wait(bus_.get(), static_cast<uint64_t>(std::min<int64_t>(left.count(), 200'000)));
    }
    if (w.result != "done")
      throw Error(Errc::io, what + ": the " + verb + " job ended '" + w.result + "' (see 'journalctl -u " + d_.unit + "')");
    std::string state = active_state();
    for (const char* s2 : want)
      if (state == s2) return;
    throw Error(Errc::io, what + " is '" + state + "' after " + verb + " (see 'journalctl -u " + d_.unit + "')");
  }

  // Manager.KillUnit(unit, "all", SIGKILL): every process of the unit.
  void kill_unit() {
    BusError err;
    int r = sd_bus_call_method(bus_.get(), kDest, kPath, kManager, "KillUnit", &err.e, nullptr, "ssi", d_.unit.c_str(), "all",
                               int32_t(SIGKILL));
    if (r < 0) throw Error(Errc::io, "systemd unit '" + d_.unit + "': KillUnit (SIGKILL) refused by systemd: " + err.text(r));
  }

  bool is_down() {
    std::string state = active_state();
    return state == "inactive" || state == "failed";
  }

  // Waits until the unit is inactive or failed (after kill_unit).
  void wait_down(const std::atomic<bool>* cancel) {
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (true) {
      std::string state = active_state();
      if (state == "inactive" || state == "failed") return;
      if (cancel && cancel->load()) throw Error(Errc::interrupted, "systemd unit '" + d_.unit + "': cancelled after SIGKILL");
      if (Clock::now() > deadline)
        throw Error(Errc::io,
                    "systemd unit '" + d_.unit + "' is still '" + state + "' 30 s after SIGKILL (see 'systemctl status " + d_.unit + "')");
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }

  // "" when systemd has the unit loaded (and, for a reload, able to reload);
  // the reason otherwise.
  std::string unit_problem(ServiceUse use) {
    const std::string what = "systemd unit '" + d_.unit + "'";
    std::string path;
    try {
      path = unit_path("systemd cannot load it");
    } catch (const Error& e) {
      return e.what();
    }
    std::string load = property(path, "LoadState").value_or("");
    if (load == "not-found")
      return what +
             " does not exist (systemd: not-found): check the unit name in the component's 'service' setting "
             "('systemctl list-unit-files')";
    if (load == "masked") return what + " is masked: 'systemctl unmask " + d_.unit + "', or declare another unit";
    if (load != "loaded") {
      std::string why = property(path, "LoadError").value_or("");
      return what + " cannot be loaded by systemd (" + (load.empty() ? "no LoadState" : load) + ")" + (why.empty() ? "" : ": " + why) +
             " (see 'systemctl status " + d_.unit + "')";
    }
    if (use == ServiceUse::reload) {
      int can = 0;
      BusError e3;
      int r = sd_bus_get_property_trivial(bus_.get(), kDest, path.c_str(), kUnit, "CanReload", &e3.e, 'b', &can);
      if (r >= 0 && !can)
        return what +
               " cannot be reloaded (it has no ExecReload): give the unit an ExecReload, or declare the "
               "component's 'reload_command'";
    }
    return "";
  }

 private:
  std::string active_state() {
    std::string path = unit_path("cannot read its state");
    std::string err;
    if (auto state = property(path, "ActiveState", &err)) return *state;
    throw Error(Errc::io, "systemd unit '" + d_.unit + "': cannot read its ActiveState: " + err);
  }

  // The unit's object path. LoadUnit, not GetUnit: systemd unloads a stopped
  // unit that nothing references (a static or disabled one) right after its
  // stop job, and GetUnit then answers "not loaded"; an inactive unit may not
  // be loaded until asked for. Throws Error(io) "<unit>: <context>: <why>".
  std::string unit_path(const char* context) {
    const std::string what = "systemd unit '" + d_.unit + "'";
    BusError err;
    sd_bus_message* reply = nullptr;
    int r = sd_bus_call_method(bus_.get(), kDest, kPath, kManager, "LoadUnit", &err.e, &reply, "s", d_.unit.c_str());
    MsgPtr rp(reply, &sd_bus_message_unref);
    if (r < 0) throw Error(Errc::io, what + ": " + context + ": " + err.text(r));
    const char* unit_path = nullptr;
    if (sd_bus_message_read(reply, "o", &unit_path) < 0 || !unit_path)
      throw Error(Errc::io, what + ": systemd's reply to LoadUnit has no path");
    return unit_path;
  }

  // A string property of org.freedesktop.systemd1.Unit; nullopt (and why, in
  // *why) when it cannot be read.
  std::optional<std::string> property(const std::string& path, const char* name, std::string* why = nullptr) {
    BusError err;
    char* v = nullptr;
    int r = sd_bus_get_property_string(bus_.get(), kDest, path.c_str(), kUnit, name, &err.e, &v);
    if (r < 0) {
      if (why) *why = err.text(r);
      return std::nullopt;
    }
    std::string out(v);
    free(v);
    return out;
  }

  const ServiceDecl& d_;
  BusPtr bus_;
};

}  // namespace

std::string ServiceDecl::describe() const {
  if (!unit.empty() && start_command.empty() && stop_command.empty()) return "systemd unit '" + unit + "'";
  std::string s;
  if (!start_command.empty()) s = "command '" + join(start_command) + "'";
  if (!stop_command.empty()) s += (s.empty() ? "" : ", ") + std::string("command '") + join(stop_command) + "'";
  if (!unit.empty()) s += ", systemd unit '" + unit + "'";
  return s.empty() ? "no service declared" : s;
}

Service::Service(ServiceDecl decl) : decl_(std::move(decl)) {}

std::string Service::problem(ServiceUse use) const {
  if (decl_.empty() && decl_.reload_command.empty())
    return "no 'service' declared (a systemd unit, or start_command and stop_command" +
           std::string(use == ServiceUse::reload ? ", or a reload_command)" : ")");
  // Each action the way stop(), start() and reload() will run it: its
  // command when one is declared, else the unit through systemd.
  bool via_systemd = false;
  auto action = [&](const std::vector<std::string>& cmd, const char* key) -> std::string {
    if (!cmd.empty())
      return find_program(cmd[0]) ? "" : std::string("the service's ") + key + " '" + cmd[0] + "' is not found or not executable";
    if (decl_.unit.empty()) return std::string("the service declares no ") + key + " and no systemd unit";
    via_systemd = true;
    return "";
  };
  ServiceUse unit_use = ServiceUse::stop_start;
  if (use == ServiceUse::reload && !decl_.reload_command.empty()) return action(decl_.reload_command, "reload_command");
  if (use == ServiceUse::reload && decl_.start_command.empty() && decl_.stop_command.empty() && !decl_.unit.empty()) {
    via_systemd = true;  // ReloadUnit
    unit_use = ServiceUse::reload;
  } else {
    for (auto [cmd, key] : {std::pair{&decl_.stop_command, "stop_command"}, {&decl_.start_command, "start_command"}})
      if (auto p = action(*cmd, key); !p.empty()) return p;
  }
  if (!via_systemd) return "";
  try {
    return Systemd(decl_).unit_problem(unit_use);
  } catch (const Error& e) {
    return e.what();
  }
}

bool Service::can_kill() const { return !decl_.kill_command.empty() || !decl_.unit.empty(); }

void Service::kill(const std::atomic<bool>* cancel) const {
  if (!decl_.kill_command.empty()) {
    ProcessSpec spec;
    spec.argv = decl_.kill_command;
    spec.timeout = std::chrono::seconds(30);
    spec.cancel = cancel;
    ProcessResult r = run_process(spec);
    if (!r.ok()) throw Error(r.cancelled ? Errc::interrupted : Errc::io, "kill command '" + join(decl_.kill_command) + "' " + r.describe());
    return;
  }
  if (decl_.unit.empty())
    throw Error(Errc::invalid_input,
                "kill the service: neither a kill_command nor a systemd unit is declared (declare the service's kill_command)");
  Systemd sd(decl_);
  sd.kill_unit();
  sd.wait_down(cancel);
}

StopOutcome Service::stop(const std::atomic<bool>* cancel) const {
  StopOutcome out;
  const bool escalate = decl_.kill_after.count() > 0 && can_kill();
  const std::string after = std::to_string(decl_.kill_after.count() / 1000) + " s";
  if (!decl_.stop_command.empty()) {
    ProcessSpec spec;
    spec.argv = decl_.stop_command;
    spec.timeout = escalate ? std::min(decl_.kill_after, decl_.timeout) : decl_.timeout;
    spec.cancel = cancel;
    ProcessResult r = run_process(spec);
    if (r.ok()) return out;
    if (!escalate || !r.timed_out)
      throw Error(r.cancelled ? Errc::interrupted : Errc::io, "stop command '" + join(decl_.stop_command) + "' " + r.describe());
    kill(cancel);
    out.killed = true;
    out.detail = "the stop command '" + join(decl_.stop_command) + "' had not finished after " + after + ": killed with " +
                 (decl_.kill_command.empty() ? "systemd's KillUnit (SIGKILL)" : "'" + join(decl_.kill_command) + "'");
    return out;
  }
  if (decl_.unit.empty()) throw Error(Errc::invalid_input, "stop the service: neither a systemd unit nor a stop_command is declared");
  if (escalate && !decl_.kill_command.empty()) {
    // A declared kill_command replaces systemd's KillUnit: stop with the unit,
    // kill with the command when the stop job outlives kill_after.
    try {
      ServiceDecl d = decl_;
      d.timeout = std::min(decl_.kill_after, decl_.timeout);
      Systemd(d).run_job("StopUnit", "stop", {"inactive", "failed"}, cancel);
      return out;
    } catch (const Error& e) {
      if (e.code() == Errc::interrupted) throw;
      // A stop job that failed (not one still running) may have left the
      // unit down: nothing to kill then.
      if (Systemd(decl_).is_down()) throw;
    }
    kill(cancel);
    Systemd(decl_).wait_down(cancel);
    out.killed = true;
    out.detail = "systemd unit '" + decl_.unit + "' had not stopped after " + after + ": killed with '" + join(decl_.kill_command) + "'";
    return out;
  }
  bool killed = false;
  Systemd(decl_).run_job("StopUnit", "stop", {"inactive", "failed"}, cancel, escalate ? decl_.kill_after : std::chrono::milliseconds{},
                         &killed);
  if (killed) {
    out.killed = true;
    out.detail = "systemd unit '" + decl_.unit + "' had not stopped after " + after + ": killed with systemd's KillUnit (SIGKILL)";
  }
  return out;
}

void Service::start(const std::atomic<bool>* cancel) const {
  if (!decl_.start_command.empty()) return run_declared(decl_, "start", decl_.start_command, cancel);
  if (decl_.unit.empty()) throw Error(Errc::invalid_input, "start the service: neither a systemd unit nor a start_command is declared");
  Systemd(decl_).run_job("StartUnit", "start", {"active"}, cancel);
}

void Service::reload(const std::atomic<bool>* cancel) const {
  if (!decl_.reload_command.empty()) return run_declared(decl_, "reload", decl_.reload_command, cancel);
  if (!decl_.start_command.empty() || !decl_.stop_command.empty() || decl_.unit.empty()) {
    stop(cancel);
    start(cancel);
    return;
  }
  Systemd(decl_).run_job("ReloadUnit", "reload", {"active"}, cancel);
}

}  // namespace cairn::agent::platform
