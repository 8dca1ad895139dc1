#include "agent/systemd_notify.h"

#include <systemd/sd-daemon.h>

namespace cairn::agent {

SystemdNotifier::SystemdNotifier() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0) interval_ = std::chrono::microseconds(usec);
}

void SystemdNotifier::ready() { sd_notify(0, "READY=1"); }

void SystemdNotifier::status(const std::string& text) { sd_notify(0, ("STATUS=" + text).c_str()); }

void SystemdNotifier::stopping() { sd_notify(0, "STOPPING=1"); }

void SystemdNotifier::watchdog() {
  if (!watchdog_enabled()) return;
  auto now = std::chrono::steady_clock::now();
  if (now - last_ < interval_ / 2) return;
  last_ = now;
  sd_notify(0, "WATCHDOG=1");
}

}  // namespace cairn::agent
