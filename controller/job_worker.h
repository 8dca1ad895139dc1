#pragma once
// One worker thread that runs jobs in order and keeps their results for the
// scheduler's next tick: what the set-record writer and the offsite copier
// share (controller/set_record.h, controller/set_copy.h). `run` must not
// throw: it reports a failure in its Result.
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace cairn::controller {

template <typename Job, typename Result>
class JobWorker {
 public:
  explicit JobWorker(std::function<Result(const Job&)> run) : run_(std::move(run)), worker_([this] { loop(); }) {}
  ~JobWorker() {
    {
      std::lock_guard g(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }
  JobWorker(const JobWorker&) = delete;
  JobWorker& operator=(const JobWorker&) = delete;

  void submit(Job job) {
    {
      std::lock_guard g(mu_);
      queue_.push_back(std::move(job));
    }
    cv_.notify_one();
  }
  // Jobs queued or running.
  size_t in_flight() const {
    std::lock_guard g(mu_);
    return queue_.size() + running_;
  }
  std::vector<Result> take_results() {
    std::lock_guard g(mu_);
    return std::exchange(results_, {});
  }

 private:
  void loop() {
    std::unique_lock g(mu_);
    for (;;) {
      cv_.wait(g, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      Job job = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
      g.unlock();
      Result res = run_(job);
      g.lock();
      --running_;
      results_.push_back(std::move(res));
    }
  }

  std::function<Result(const Job&)> run_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  size_t running_ = 0;
  std::vector<Result> results_;
  bool stop_ = false;
  std::thread worker_;  // last: started once everything above exists
};

}  // namespace cairn::controller
