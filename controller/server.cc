// Startup (keys, operators, sockets) and the poll loop.
#include "controller/server.h"

#include <malloc.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/util/cpus.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "controller/key_rotation.h"
#include "controller/keyfiles.h"
#include "controller/status_view.h"
#include "controller/wire.h"
#include "proto/protocol.h"

namespace cairn::controller {
namespace {

// Frames kept per message: more than the protocol uses means a bad message,
// and keeping them all would let a peer make us hold any number of frames.
constexpr size_t kMaxFrames = 4;

// Receives one whole multipart message without blocking; extra frames are
// read and dropped (the message is then marked by a frame count of
// kMaxFrames + 1 so the parser refuses it). False when nothing was waiting.
bool recv_bounded(zmq::socket_t& s, std::vector<zmq::message_t>& out) {
  out.clear();
  zmq::message_t part;
  if (!s.recv(part, zmq::recv_flags::dontwait)) return false;
  bool more = part.more();
  out.push_back(std::move(part));
  while (more) {
    zmq::message_t next;
    if (!s.recv(next, zmq::recv_flags::none)) break;
    more = next.more();
    if (out.size() <= kMaxFrames) out.push_back(std::move(next));
  }
  return true;
}

catalog::Catalog open_catalog(const ControllerConfig& c) { return catalog::Catalog::open(c.catalog_path()); }

void curve_server(zmq::socket_t& s, const std::string& secret, const char* domain, const ControllerConfig& c) {
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::curve_server, 1);
  s.set(zmq::sockopt::curve_secretkey, secret);
  s.set(zmq::sockopt::zap_domain, domain);
  s.set(zmq::sockopt::backlog, c.backlog);
  s.set(zmq::sockopt::maxmsgsize, int64_t(cairn::proto::kMaxMessageBytes));
  s.set(zmq::sockopt::router_mandatory, 1);
}

// The controller's sockets copy each message out of libzmq's read buffer
// instead of keeping a reference into it (libzmq's default, "zero copy"):
// with references, a buffer (8 KB, and ~10 KB of reference counts) stays
// while any message read into it waits, and the decoder takes another
// meanwhile. Measured at 1,000 agents sending progress at the full rate: the
// controller peaked at 99-103 MB with references, 73 MB with copies, every
// timing the same (docs/benchmarks.md § Fleet). ZMQ_ZERO_COPY_RECV is a
// context option that every libzmq 4.3 reads; zmq.h names it only in its
// draft API, hence the number. Set before any socket: each reads it when made.
constexpr int kZmqZeroCopyRecv = 10;

zmq::context_t fleet_context(int io_threads) {
  zmq::context_t ctx(io_threads);
  if (zmq_ctx_set(ctx.handle(), kZmqZeroCopyRecv, 0) != 0)
    spdlog::warn(
        "controller: this libzmq refuses ZMQ_ZERO_COPY_RECV ({}); received messages keep their read "
        "buffers, which holds more memory under a progress flood",
        zmq_strerror(zmq_errno()));
  return ctx;
}

// A listener that cannot bind says which one, where it is configured and
// what to look at; libzmq's own message is only "Address already in use".
void bind_listener(zmq::socket_t& socket, const std::string& endpoint, const char* setting) {
  try {
    socket.bind(endpoint);
  } catch (const zmq::error_t& e) {
    std::string hint = e.num() == EADDRINUSE ? "; another process holds that address ('ss -ltnp' shows which): "
                                               "stop it or choose another port"
                                             : "";
    throw Error(Errc::io, std::string("cannot listen on '") + endpoint + "' (" + setting + "): " + e.what() + hint);
  }
}

}  // namespace

unsigned io_threads_for(const ControllerConfig& c, unsigned usable_cpus) {
  if (c.io_threads) return c.io_threads;
  return std::clamp(usable_cpus, 1u, 8u);
}

Server::Server(const ControllerConfig& config)
    : config_(config),
      data_dir_(DataDir::take(config.data_dir)),
      catalog_(open_catalog(config)),
      signing_key_(load_signing_key(catalog_, config.key_dir)),
      ctx_(fleet_context(int(io_threads_for(config, usable_cpus())))),
      fleet_socket_(ctx_, zmq::socket_type::router),
      operator_socket_(ctx_, zmq::socket_type::router) {
  std::string curve_secret = read_curve_secret(config.key_dir + "/" + kCurveSecretFile);
  std::string key_id = signing_key_.key_id();
  if (config.audit_kafka.enabled()) catalog_.set_audit_outbox_cap(config.audit_kafka.outbox_max_events);

  catalog_.transaction("controller", [&](catalog::Tx& tx) {
    for (const auto& [name, file] : config.operator_key_files) {
      auto key = z85_to_key(read_curve_public(file));
      if (tx.active_operator_name(*key) == name) continue;
      if (tx.active_operator_name(*key))
        throw Error(Errc::exists, "operator key in '" + file + "' is already registered under another name");
      tx.add_operator(name, *key);
    }
  });

  zap_ = std::make_unique<ZapServer>(ctx_, catalog_, config.enrolment_open, config.max_pending_agents, config.audit_refusals_per_minute);
  curve_server(fleet_socket_, curve_secret, kFleetZapDomain, config);
  curve_server(operator_socket_, curve_secret, kOperatorZapDomain, config);
  // At most 8 unread messages per agent wait in the controller (libzmq's
  // default is 1,000): beyond that libzmq stops reading that agent's
  // connection and the agent's own queue holds them (it drops progress past
  // 256, never results: agent/session.cc). Under progress from 1,000 agents
  // at 112,000 events/s the default let the controller peak at 342-390 MB;
  // with 8, 123-127 MB, absorbing 87,000-105,000/s (81,000-93,000/s before).
  // Nothing is dropped by the controller, and no agent can fill its memory.
  fleet_socket_.set(zmq::sockopt::rcvhwm, 8);
  explicit_bzero(curve_secret.data(), curve_secret.size());
  bind_listener(fleet_socket_, config.fleet_listen, "[fleet] listen");
  bind_listener(operator_socket_, config.operator_listen, "[operator] listen");

  fleet_ = std::make_unique<Fleet>(fleet_socket_, catalog_, config_, key_id);
  orders_ = std::make_unique<Orders>(catalog_, config_, signing_key_);
  orders_->set_connected([f = fleet_.get()](const std::string& agent_id) { return f->connected(agent_id); });
  orders_->set_supports(
      [f = fleet_.get()](const std::string& agent_id, const std::string& feature) { return f->supports(agent_id, feature); });
  // A returning agent's member is first put back on its own data where an
  // ended restore still owes it that (docs/protocol.md § A rollback owed to
  // a member that was away). A read first: 10,000 registrations write nothing.
  fleet_->set_on_registered([this](const std::string& agent_id) {
    if (catalog_.read([&](const catalog::Tx& tx) { return tx.owed_rollbacks(agent_id).empty(); })) return;
    catalog_.transaction("controller", [&](catalog::Tx& tx) { orders_->issue_owed_rollbacks(tx, agent_id); });
  });
  catalog_.set_task_ended_hook([this](catalog::Tx& tx, const catalog::Task& t) {
    orders_->on_task_ended(tx, t);
    // A backup added data: /metrics and the page show the repository's new
    // size within seconds, not at the next 10-minute measurement.
    if (t.kind == catalog::TaskKind::backup && maintenance_ &&
        (t.state == catalog::TaskState::succeeded || t.state == catalog::TaskState::partial))
      maintenance_->measure_soon(t.repository);
  });
  publisher_ = std::make_unique<AuditPublisher>(config_);
  api_ = std::make_unique<OperatorApi>(catalog_, *fleet_, *orders_, signing_key_, config.key_dir, publisher_.get());
  maintenance_ = std::make_unique<Maintenance>(config.repositories);
  scheduler_ = std::make_unique<Scheduler>(catalog_, *orders_, *maintenance_, config_);
  set_records_ = std::make_unique<SetRecordWriter>(config_);
  scheduler_->set_record_writer(set_records_.get(), &signing_key_);
  set_copier_ = std::make_unique<SetCopier>(config_);
  scheduler_->set_copier(set_copier_.get());
  verifier_ = std::make_unique<Verifier>(catalog_, *maintenance_, config_);
  // A repository declared since the last start gets the records of the sets
  // already stored there (the scheduler passes over the others quickly).
  catalog_.transaction("controller", [&](catalog::Tx& tx) { tx.set_records_due_unwritten(signing_key_.key_id()); });
  scheduler_->start(catalog_.read([](const catalog::Tx& tx) { return tx.now(); }));
  api_->set_scheduler(scheduler_.get(), config.time_zone);
  api_->set_config(config_);
  api_->set_verifier(verifier_.get());
  if (!config.http_listen.empty()) {
    auto [host, port] = split_host_port(config.http_listen);
    std::string token = config.http_token_file.empty() ? std::string() : read_secret_file(config.http_token_file);
    try {
      http_ = std::make_unique<HttpServer>(host, port, std::move(token));
      spdlog::info("http: /metrics and the status page on http://{}{}{}:{}/{}", host.find(':') != std::string::npos ? "[" : "", host,
                   host.find(':') != std::string::npos ? "]" : "", http_->port(),
                   config.http_token_file.empty() ? "" : " (bearer token required)");
    } catch (const Error& e) {
      // The default address taken (a second controller on the host, a test
      // run) must not stop the backups; an address the operator chose must.
      if (config.http_listen_given) throw;
      spdlog::warn("http: {}; /metrics and the status page are off (set [http] listen)", e.what());
    }
  }
  render_status();
  spdlog::info("controller '{}' listening: fleet {} operator {}; signing key {}; enrolment {}; {} I/O thread(s)", config.controller_id,
               fleet_endpoint(), operator_endpoint(), key_id, config.enrolment_open ? "open" : "closed", ctx_.get(zmq::ctxopt::io_threads));
}

Server::~Server() {
  if (publisher_) publisher_->stop();
}

std::string Server::fleet_endpoint() const { return fleet_socket_.get(zmq::sockopt::last_endpoint); }
std::string Server::operator_endpoint() const { return operator_socket_.get(zmq::sockopt::last_endpoint); }

void Server::on_fleet() {
  std::vector<zmq::message_t> frames;
  // Bounded so the operator socket and timers are served under load too.
  int i = 0;
  for (; i < 1000 && recv_bounded(fleet_socket_, frames); ++i) fleet_->on_message(frames);
  if (i < 1000) fleet_->caught_up();  // the socket was empty: every message sent until now is read
  fleet_->flush_task_results();       // and the plan acks and progress before them
}

void Server::on_operator() {
  std::vector<zmq::message_t> frames;
  for (int i = 0; i < 100 && recv_bounded(operator_socket_, frames); ++i) {
    if (frames.size() < 2) continue;
    std::string routing_id = frames[0].to_string();
    const char* uid = nullptr;
    try {
      uid = frames[1].gets("User-Id");
    } catch (const zmq::error_t&) {
    }
    std::string actor = uid ? uid : "";
    if (actor.rfind("operator:", 0) != 0) continue;
    std::vector<std::string> body;
    for (size_t k = 1; k < frames.size(); ++k) body.push_back(frames[k].to_string());
    auto parsed = parse_operator_request(body);
    cairn::v1::OperatorResponse resp;
    if (!parsed.ok()) {
      resp.set_request_id(parsed.message.request_id());
      resp.set_code(parsed.code);
      resp.set_detail(parsed.detail);
      spdlog::info("operator: refused a request from '{}': {}", actor, parsed.detail);
    } else {
      resp = api_->handle(actor, parsed.message);
    }
    auto out = operator_frames(resp);
    try {
      if (operator_socket_.send(zmq::buffer(routing_id), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
        operator_socket_.send(zmq::buffer(out[0]), zmq::send_flags::sndmore);
        operator_socket_.send(zmq::buffer(out[1]), zmq::send_flags::none);
      }
    } catch (const zmq::error_t& e) {
      spdlog::debug("operator: cannot answer '{}': {}", actor, e.what());
    }
  }
}

void Server::prune_audit() {
  auto now = std::chrono::steady_clock::now();
  if (last_prune_ != std::chrono::steady_clock::time_point{} && now - last_prune_ < kAuditPruneEvery) return;
  last_prune_ = now;
  try {
    const int64_t max_age_ms = config_.audit_retention_days * 86400 * 1000;
    int64_t n = catalog_.transaction("controller", [&](catalog::Tx& tx) {
      // With a publisher only what Kafka has ages out (docs/audit.md).
      return config_.audit_kafka.enabled()
                 ? tx.prune_published_audit(config_.audit_retention_events, max_age_ms, config_.audit_kafka.outbox_max_events)
                 : tx.prune_audit(config_.audit_retention_events, max_age_ms);
    });
    if (n > 0)
      spdlog::info("controller: audit retention deleted the {} oldest events (keeps {} events, {} days)", n, config_.audit_retention_events,
                   config_.audit_retention_days);
  } catch (const std::exception& e) {
    spdlog::error("controller: audit retention failed: {}", e.what());
  }
}

namespace {
// Resident set size from /proc/self/statm, in bytes (0 when unreadable).
int64_t rss_bytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  long pages_total = 0, pages_resident = 0;
  int n = std::fscanf(f, "%ld %ld", &pages_total, &pages_resident);
  std::fclose(f);
  return n == 2 ? int64_t(pages_resident) * sysconf(_SC_PAGESIZE) : 0;
}
}  // namespace

// Memory the controller no longer uses goes back to the OS. glibc keeps freed
// heap pages mapped (only the top of each arena is trimmed on free): the
// pages of a burst (a reconnect storm's handshakes, a progress flood, a big
// transaction's SQLite pages, each status render's text) stay resident
// after the burst unless malloc_trim() releases them. The catalog's page cache
// (up to 16 MiB, sized for sets over 10,000 agents) is emptied first: a read
// after it comes from the OS's page cache. Both take milliseconds and run
// every kReleaseMemoryEvery, between batches.
void Server::release_memory() {
  auto now = std::chrono::steady_clock::now();
  if (now - last_release_ < kReleaseMemoryEvery) return;
  last_release_ = now;
  const bool log = spdlog::should_log(spdlog::level::debug);  // the RSS reads are for the log only
  int64_t before = log ? rss_bytes() : 0;
  int64_t sqlite_freed = catalog_.release_memory();
  malloc_trim(0);
  if (!log) return;
  auto took = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - now);
  int64_t after = rss_bytes();
  spdlog::debug("controller: released memory in {} us: rss {} -> {} KiB (catalog cache {} KiB)", took.count(), before / 1024, after / 1024,
                sqlite_freed / 1024);
}

void Server::render_status() {
  if (!http_) return;
  // Every 2 s, or less often when rendering is slow (a large catalog): the
  // loop spends at most a tenth of its time on it.
  auto now = std::chrono::steady_clock::now();
  auto every = std::max<std::chrono::steady_clock::duration>(std::chrono::seconds(2), 10 * last_render_took_);
  if (last_render_ != std::chrono::steady_clock::time_point{} && now - last_render_ < every) return;
  last_render_ = now;
  try {
    StatusSources src{catalog_, *fleet_, *maintenance_, publisher_.get(), {}, verifier_.get()};
    for (const auto& r : config_.repositories) src.repositories.push_back(r.name);
    // /metrics first, then the page (a call's arguments are evaluated in no
    // fixed order): a repository measured between the two renders is on the
    // page no later than in /metrics, so what /metrics shows the page shows
    // too (CI once saw the page one render behind /metrics).
    std::string metrics = render_metrics(src);
    std::string page = render_status_page(src, config_.controller_id);
    http_->set_content(std::move(metrics), std::move(page));
  } catch (const std::exception& e) {
    spdlog::error("http: cannot render the metrics and status page: {}", e.what());
  }
  last_render_took_ = std::chrono::steady_clock::now() - now;
}

void Server::run(const std::atomic<bool>& stop, const std::function<void()>& alive) {
  publisher_->start();
  auto last_alive = std::chrono::steady_clock::time_point{};
  while (!stop) {
    if (alive && std::chrono::steady_clock::now() - last_alive >= std::chrono::seconds(5)) {
      last_alive = std::chrono::steady_clock::now();
      alive();
    }
    zmq::pollitem_t items[] = {{zap_->socket().handle(), 0, ZMQ_POLLIN, 0},
                               {fleet_socket_.handle(), 0, ZMQ_POLLIN, 0},
                               {operator_socket_.handle(), 0, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 3, std::chrono::milliseconds(100));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      throw;
    }
    try {
      for (int i = 0; i < 100 && (items[0].revents & ZMQ_POLLIN); ++i) {
        zap_->handle_one();
        items[0].revents = zap_->socket().get(zmq::sockopt::events) & ZMQ_POLLIN;
      }
      if (items[1].revents & ZMQ_POLLIN)
        on_fleet();
      else
        fleet_->caught_up();  // nothing waiting
      if (items[2].revents & ZMQ_POLLIN) on_operator();
      fleet_->tick();
      // Plans of a cluster restore's next step, made when the last member ended the step before.
      fleet_->deliver(orders_->take_agents_to_deliver());
      zap_->tick();
      prune_audit();
      // The scheduler works in whole seconds: asking it 20 times a second is
      // enough (a catalog read after every batch of messages is not free).
      if (auto t = std::chrono::steady_clock::now(); t - last_schedule_ >= std::chrono::milliseconds(50)) {
        last_schedule_ = t;
        int64_t now = catalog_.read([](const catalog::Tx& tx) { return tx.now(); });
        fleet_->deliver(scheduler_->tick(now));
        verifier_->tick(now);
      }
      render_status();
      release_memory();
    } catch (const zmq::error_t& e) {
      spdlog::error("controller: socket error: {}", e.what());
    }
  }
  spdlog::info("controller: stopping");
  publisher_->stop();
}

}  // namespace cairn::controller
