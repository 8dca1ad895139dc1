#pragma once
// Reconnect delays: exponential from `first` to `cap`, each with up to +50 %
// random jitter so a restarted controller is not hit by every agent at once.
#include <algorithm>
#include <chrono>
#include <random>

namespace cairn::agent {

class Backoff {
 public:
  explicit Backoff(std::chrono::milliseconds first = std::chrono::seconds(1), std::chrono::milliseconds cap = std::chrono::seconds(32))
      : first_(first), cap_(cap), next_(first), rng_(std::random_device{}()) {}

  // The delay to wait now; the following one doubles, up to the cap.
  std::chrono::milliseconds next() {
    auto base = next_;
    next_ = std::min(cap_, next_ * 2);
    std::uniform_int_distribution<long> jitter(0, base.count() / 2);
    return base + std::chrono::milliseconds(jitter(rng_));
  }
  // The base of the next delay, without jitter (tests, logs).
  std::chrono::milliseconds peek() const { return next_; }
  void reset() { next_ = first_; }

 private:
  std::chrono::milliseconds first_, cap_, next_;
  std::mt19937_64 rng_;
};

}  // namespace cairn::agent
