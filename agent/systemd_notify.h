#pragma once
// sd_notify for Type=notify with a watchdog. Without systemd (NOTIFY_SOCKET
// unset) every call is a no-op, so the agent runs the same by hand.
#include <chrono>
#include <string>

namespace cairn::agent {

class SystemdNotifier {
 public:
  SystemdNotifier();
  void ready();
  void status(const std::string& text);
  void stopping();
  // Sends WATCHDOG=1 when half the watchdog interval has passed since the last.
  void watchdog();
  bool watchdog_enabled() const { return interval_.count() > 0; }

 private:
  std::chrono::microseconds interval_{0};
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace cairn::agent
