#pragma once
// Progress events shared by the CLI (bar or JSON lines) and library callers (the
// agent forwards them to the controller).
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace cairn::repo {

struct Progress {
  std::string phase;  // "scan", "backup", "finalize", "restore", "check", "done"
  uint64_t files_done = 0, files_total = 0;
  uint64_t bytes_done = 0, bytes_total = 0;
  uint64_t bytes_new = 0;  // backup: plaintext bytes not already in the repository
  uint64_t errors = 0;
  bool totals_known = false;  // false while the scan is still counting
  double elapsed_s = 0;
  std::string current;  // the file being worked on
};

using ProgressFn = std::function<void(const Progress&)>;

// Calls tick() every interval on its own thread until it is destroyed; does
// nothing when tick is empty. Long-running operations report through it.
class ProgressTicker {
 public:
  ProgressTicker(std::chrono::milliseconds interval, std::function<void()> tick) : interval_(interval), tick_(std::move(tick)) {
    if (tick_) thread_ = std::thread([this] { loop(); });
  }
  ~ProgressTicker() {
    {
      std::lock_guard g(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  ProgressTicker(const ProgressTicker&) = delete;
  ProgressTicker& operator=(const ProgressTicker&) = delete;

 private:
  void loop() {
    std::unique_lock lk(mu_);
    while (!cv_.wait_for(lk, interval_, [&] { return stop_; })) {
      lk.unlock();
      tick_();
      lk.lock();
    }
  }
  std::chrono::milliseconds interval_;
  std::function<void()> tick_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace cairn::repo
