#pragma once
// The controller daemon's sockets and loop: the ZAP handler, the fleet ROUTER
// and the operator ROUTER, polled from one thread that owns the catalog
// connection (a Catalog is single-threaded; CURVE handshakes run in libzmq's
// I/O thread and only wait for the ZAP answer, so one loop keeps up).
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <zmq.hpp>

#include "common/plan/signing_key.h"
#include "controller/audit_publisher.h"
#include "controller/catalog/catalog.h"
#include "controller/config.h"
#include "controller/data_dir.h"
#include "controller/fleet.h"
#include "controller/http_server.h"
#include "controller/maintenance.h"
#include "controller/operator_api.h"
#include "controller/orders.h"
#include "controller/scheduler.h"
#include "controller/verification.h"
#include "controller/zap.h"

namespace cairn::controller {

// ZeroMQ I/O threads for the controller's sockets: the configured
// fleet.io_threads, else one per usable CPU, at most 8. They do the CURVE
// handshakes and the encryption of every message; libzmq spreads
// connections over them. After a restart of a controller of 10,000 agents
// one thread was the storm's limit (docs/benchmarks.md § Fleet).
unsigned io_threads_for(const ControllerConfig& c, unsigned usable_cpus);

class Server {
 public:
  // Takes the data directory (data_dir.h: private, one controller at a
  // time), opens the catalog, loads keys, registers operators, binds the sockets.
  // Throws cairn::Error or zmq::error_t with the reason when it cannot.
  explicit Server(const ControllerConfig& config);
  ~Server();

  // Serves until stop becomes true. alive, when set, is called from the loop
  // at most every 5 s (the systemd watchdog's ping).
  void run(const std::atomic<bool>& stop, const std::function<void()>& alive = {});

  // The HTTP listener's port (0 when it is off).
  uint16_t http_port() const { return http_ ? http_->port() : 0; }

  // The endpoints actually bound (a port of '*' is resolved).
  std::string fleet_endpoint() const;
  std::string operator_endpoint() const;

 private:
  void on_fleet();
  void on_operator();
  // Audit outbox retention (docs/configuration.md § [audit]): at start, then
  // every kAuditPruneEvery.
  void prune_audit();
  static constexpr std::chrono::minutes kAuditPruneEvery{10};

  const ControllerConfig& config_;
  DataDir data_dir_;  // held first, released last
  catalog::Catalog catalog_;
  plan::SigningKey signing_key_;
  zmq::context_t ctx_;
  std::unique_ptr<ZapServer> zap_;
  zmq::socket_t fleet_socket_;
  zmq::socket_t operator_socket_;
  std::unique_ptr<Fleet> fleet_;
  std::unique_ptr<Orders> orders_;
  std::unique_ptr<AuditPublisher> publisher_;
  std::unique_ptr<OperatorApi> api_;
  std::unique_ptr<Maintenance> maintenance_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<SetRecordWriter> set_records_;  // signed set records, written on a thread of its own
  std::unique_ptr<SetCopier> set_copier_;         // offsite copies by policy, on a thread of its own
  std::unique_ptr<Verifier> verifier_;            // the repositories against the catalog, on a thread of its own
  std::unique_ptr<HttpServer> http_;
  std::chrono::steady_clock::time_point last_render_{};
  std::chrono::steady_clock::duration last_render_took_{};
  void render_status();
  std::chrono::steady_clock::time_point last_prune_{};
  // Every kReleaseMemoryEvery: the catalog's idle page cache and the heap's
  // free pages go back to the OS (see release_memory()).
  void release_memory();
  static constexpr std::chrono::seconds kReleaseMemoryEvery{30};
  std::chrono::steady_clock::time_point last_release_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_schedule_{};  // the scheduler's last tick (run())
};

}  // namespace cairn::controller
