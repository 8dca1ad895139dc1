#include "agent/drivers/etcd/client.h"

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <thread>

#include "agent/drivers/etcd/proto/rpc.grpc.pb.h"
#include "agent/drivers/etcd/snapshot_stream.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::etcd {

std::string id_hex(uint64_t id) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(id));
  return buf;
}

namespace {

std::string status_text(const grpc::Status& s) {
  static const char* names[] = {"OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
                                "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                                "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
                                "DATA_LOSS", "UNAUTHENTICATED"};
  int c = int(s.error_code());
  std::string n = (c >= 0 && c <= 16) ? names[c] : std::to_string(c);
  return n + ": " + s.error_message();
}

std::string read_pem(const std::string& path, const char* what, bool secret) {
  try {
    if (secret) return read_secret_file(path);
    Bytes b = read_file(path, 1 << 20);
    return std::string(b.begin(), b.end());
  } catch (const Error& e) {
    throw Error(Errc::invalid_input, std::string("etcd ") + what + " '" + path + "': " + e.what());
  }
}

// Ends a call gRPC's own deadline did not end. Seen once: a unary Status
// call with a 2 s deadline blocked for over ten minutes in a process that had
// been stopped (SIGSTOP) and continued shortly before (the class of
// grpc/grpc#22004: a deadline not honoured). Every call with a deadline is
// registered here, and cancelled (ClientContext::TryCancel, thread-safe) a
// second after its deadline if it is still running: the call then returns
// CANCELLED and the caller's own error handling runs. One thread per process,
// started on first use and never stopped (it sleeps while nothing is
// registered).
class CallWatchdog {
 public:
  static CallWatchdog& instance() {
    static auto* w = new CallWatchdog;  // never destroyed: calls may still end during exit
    return *w;
  }
  uint64_t add(grpc::ClientContext* ctx, std::chrono::steady_clock::time_point at) {
    std::lock_guard<std::mutex> l(mu_);
    uint64_t id = ++next_;
    calls_.emplace(id, Call{ctx, at});
    if (!thread_started_) {
      std::thread([this] { loop(); }).detach();
      thread_started_ = true;
    }
    cv_.notify_one();
    return id;
  }
  void remove(uint64_t id) {
    std::lock_guard<std::mutex> l(mu_);
    calls_.erase(id);
  }

 private:
  struct Call {
    grpc::ClientContext* ctx;
    std::chrono::steady_clock::time_point at;
  };
  void loop() {
    std::unique_lock<std::mutex> l(mu_);
    for (;;) {
      auto now = std::chrono::steady_clock::now();
      auto next = now + std::chrono::hours(1);
      for (auto& [id, c] : calls_) {
        if (c.ctx && c.at <= now) {
          c.ctx->TryCancel();  // under mu_: remove() waits, so the context is alive
          c.ctx = nullptr;     // once
        } else if (c.ctx) {
          next = std::min(next, c.at);
        }
      }
      cv_.wait_until(l, next);
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Call> calls_;
  uint64_t next_ = 0;
  bool thread_started_ = false;
};

// A call's registration with the watchdog, for as long as the call runs.
class WatchedCall {
 public:
  WatchedCall() = default;
  WatchedCall(grpc::ClientContext& ctx, std::chrono::milliseconds timeout)
      : id_(CallWatchdog::instance().add(&ctx, std::chrono::steady_clock::now() + timeout + std::chrono::seconds(1))) {}
  WatchedCall(const WatchedCall&) = delete;
  WatchedCall& operator=(const WatchedCall&) = delete;
  ~WatchedCall() {
    if (id_) CallWatchdog::instance().remove(id_);
  }

 private:
  uint64_t id_ = 0;
};

}  // namespace

struct Client::Impl {
  ClientOptions opt;
  std::string target;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<etcdserverpb::KV::Stub> kv;
  std::unique_ptr<etcdserverpb::Cluster::Stub> cluster;
  std::unique_ptr<etcdserverpb::Maintenance::Stub> maintenance;
  std::string token;

  // The call's deadline and token; with a deadline, the returned guard
  // keeps the call registered with the watchdog: hold it until the call ends.
  [[nodiscard]] std::unique_ptr<WatchedCall> prepare(grpc::ClientContext& ctx, bool deadline = true) const {
    if (!token.empty()) ctx.AddMetadata("token", token);
    if (!deadline) return std::make_unique<WatchedCall>();
    ctx.set_deadline(std::chrono::system_clock::now() + opt.timeout);
    return std::make_unique<WatchedCall>(ctx, opt.timeout);
  }

  [[noreturn]] void fail(const char* call, const grpc::Status& s, const std::string& when = {}) const {
    std::string hint;
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE)
      hint = "; is etcd running there, and does 'endpoint' match its --listen-client-urls (http or https)?";
    else if (s.error_code() == grpc::StatusCode::UNAUTHENTICATED || s.error_code() == grpc::StatusCode::PERMISSION_DENIED)
      hint = opt.user.empty() ? "; etcd has authentication on: set 'auth_file'" : "; the snapshot needs a user with the root role";
    throw Error(Errc::io, "etcd '" + opt.endpoint + "': " + call + " failed" + when + ": " + status_text(s) + hint);
  }
};

Client::Client(ClientOptions opt) : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  m.opt = std::move(opt);
  const std::string& ep = m.opt.endpoint;
  bool tls;
  if (ep.rfind("https://", 0) == 0) {
    tls = true;
    m.target = ep.substr(8);
  } else if (ep.rfind("http://", 0) == 0) {
    tls = false;
    m.target = ep.substr(7);
  } else {
    throw Error(Errc::invalid_input, "etcd endpoint '" + ep + "' must start with 'http://' or 'https://'");
  }
  while (!m.target.empty() && m.target.back() == '/') m.target.pop_back();
  if (m.target.empty() || m.target.find('/') != std::string::npos || m.target.find(',') != std::string::npos)
    throw Error(Errc::invalid_input, "etcd endpoint '" + ep + "' must be one 'scheme://host:port'");
  if (!tls && (!m.opt.ca_file.empty() || !m.opt.cert_file.empty()))
    throw Error(Errc::invalid_input, "etcd endpoint '" + ep + "' is plain http but TLS files are set; use 'https://'");
  if (m.opt.cert_file.empty() != m.opt.key_file.empty())
    throw Error(Errc::invalid_input, "etcd client certificate: 'cert_file' and 'key_file' go together");

  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (tls) {
    grpc::SslCredentialsOptions so;
    if (!m.opt.ca_file.empty()) so.pem_root_certs = read_pem(m.opt.ca_file, "CA file", false);
    if (!m.opt.cert_file.empty()) {
      so.pem_cert_chain = read_pem(m.opt.cert_file, "certificate file", false);
      so.pem_private_key = read_pem(m.opt.key_file, "key file", true);
    }
    creds = grpc::SslCredentials(so);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);  // etcd's snapshot pieces are 32 KiB; headroom for newer servers
  m.channel = grpc::CreateCustomChannel(m.target, creds, args);
  m.kv = etcdserverpb::KV::NewStub(m.channel);
  m.cluster = etcdserverpb::Cluster::NewStub(m.channel);
  m.maintenance = etcdserverpb::Maintenance::NewStub(m.channel);

  if (!m.opt.user.empty()) {
    auto auth = etcdserverpb::Auth::NewStub(m.channel);
    etcdserverpb::AuthenticateRequest req;
    req.set_name(m.opt.user);
    req.set_password(m.opt.password);
    etcdserverpb::AuthenticateResponse resp;
    grpc::ClientContext ctx;
    auto watched = m.prepare(ctx);
    grpc::Status s = auth->Authenticate(&ctx, req, &resp);
    if (!s.ok())
      throw Error(Errc::io, "etcd '" + ep + "': authentication as '" + m.opt.user + "' failed: " + status_text(s) +
                                "; check the user and password in 'auth_file' (and that etcd has authentication on)");
    m.token = resp.token();
  }
}

Client::~Client() = default;

const std::string& Client::endpoint() const { return impl_->opt.endpoint; }

MemberStatus Client::status() {
  etcdserverpb::StatusRequest req;
  etcdserverpb::StatusResponse r;
  grpc::ClientContext ctx;
  auto watched = impl_->prepare(ctx);
  grpc::Status s = impl_->maintenance->Status(&ctx, req, &r);
  if (!s.ok()) impl_->fail("Status", s);
  MemberStatus st;
  st.version = r.version();
  st.cluster_id = r.header().cluster_id();
  st.member_id = r.header().member_id();
  st.revision = r.header().revision();
  st.raft_term = r.raftterm();
  st.raft_index = r.raftindex();
  st.raft_applied_index = r.raftappliedindex();
  st.db_size = r.dbsize();
  st.db_size_in_use = r.dbsizeinuse();
  st.leader = r.leader();
  st.is_learner = r.islearner();
  st.errors.assign(r.errors().begin(), r.errors().end());
  return st;
}

bool Client::answers() {
  etcdserverpb::StatusRequest req;
  etcdserverpb::StatusResponse r;
  grpc::ClientContext ctx;
  auto watched = impl_->prepare(ctx);
  grpc::Status s = impl_->maintenance->Status(&ctx, req, &r);
  return s.ok() || (s.error_code() != grpc::StatusCode::UNAVAILABLE && s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED);
}

std::vector<Member> Client::members() {
  etcdserverpb::MemberListRequest req;
  etcdserverpb::MemberListResponse r;
  grpc::ClientContext ctx;
  auto watched = impl_->prepare(ctx);
  grpc::Status s = impl_->cluster->MemberList(&ctx, req, &r);
  if (!s.ok()) impl_->fail("MemberList", s);
  std::vector<Member> out;
  for (const auto& pm : r.members()) {
    Member mm;
    mm.id = pm.id();
    mm.name = pm.name();
    mm.peer_urls.assign(pm.peerurls().begin(), pm.peerurls().end());
    mm.client_urls.assign(pm.clienturls().begin(), pm.clienturls().end());
    mm.is_learner = pm.islearner();
    out.push_back(std::move(mm));
  }
  return out;
}

int64_t Client::count_keys(int64_t revision) {
  etcdserverpb::RangeRequest req;
  // key "\0" with range_end "\0": every key (etcd's "from key" form).
  req.set_key(std::string(1, '\0'));
  req.set_range_end(std::string(1, '\0'));
  req.set_revision(revision);
  req.set_count_only(true);
  // This member's own count: a fixed revision reads the same on every member
  // that applied it, and a serializable read needs no quorum (a cluster
  // restore's safety backup runs while the other members are stopping).
  req.set_serializable(true);
  etcdserverpb::RangeResponse r;
  grpc::ClientContext ctx;
  auto watched = impl_->prepare(ctx);
  grpc::Status s = impl_->kv->Range(&ctx, req, &r);
  if (!s.ok()) impl_->fail("Range (key count)", s);
  return r.count();
}

KvHash Client::hash_kv(int64_t revision) {
  etcdserverpb::HashKVRequest req;
  req.set_revision(revision);
  etcdserverpb::HashKVResponse r;
  grpc::ClientContext ctx;
  auto watched = impl_->prepare(ctx);
  grpc::Status s = impl_->maintenance->HashKV(&ctx, req, &r);
  // etcd refuses HashKV at a revision that is not above the compacted one, so
  // a member compacted at its current revision (a quiet etcd after `etcdctl
  // compact`) refuses its own current revision. Revision 0 means "the current
  // one" and is not refused: its hash is the one asked for while the member
  // is still at that revision.
  if (!s.ok() && s.error_code() == grpc::StatusCode::OUT_OF_RANGE && revision > 0) {
    etcdserverpb::HashKVRequest now;
    now.set_revision(0);
    etcdserverpb::HashKVResponse rn;
    grpc::ClientContext ctx2;
    auto watched2 = impl_->prepare(ctx2);
    grpc::Status s2 = impl_->maintenance->HashKV(&ctx2, now, &rn);
    if (s2.ok() && rn.header().revision() == revision) return KvHash{rn.hash(), rn.compact_revision(), rn.header().revision()};
  }
  if (!s.ok()) impl_->fail("HashKV", s);
  return KvHash{r.hash(), r.compact_revision(), r.header().revision()};
}

SnapshotResult Client::snapshot(const std::function<void(std::string_view)>& on_data, const std::atomic<bool>* cancel,
                                std::chrono::milliseconds stall) {
  grpc::ClientContext ctx;
  auto watched = impl_->prepare(ctx, false);  // as long as it takes, while data keeps coming
  etcdserverpb::SnapshotRequest req;
  auto reader = impl_->maintenance->Snapshot(&ctx, req);

  // A watchdog cancels the call when asked to or when the stream stalls: a
  // blocked Read() returns only when the call ends.
  std::mutex mu;
  std::condition_variable cv;
  bool done = false, stalled = false, cancelled = false;
  auto last = std::chrono::steady_clock::now();
  std::thread watchdog([&] {
    std::unique_lock lk(mu);
    while (!done) {
      cv.wait_for(lk, std::chrono::milliseconds(100));
      if (done) break;
      if (cancel && cancel->load()) {
        cancelled = true;
        ctx.TryCancel();
        break;
      }
      if (std::chrono::steady_clock::now() - last > stall) {
        stalled = true;
        ctx.TryCancel();
        break;
      }
    }
  });
  auto stop_watchdog = [&] {
    {
      std::lock_guard lk(mu);
      done = true;
    }
    cv.notify_all();
    if (watchdog.joinable()) watchdog.join();
  };

  SnapshotStreamCheck check;
  etcdserverpb::SnapshotResponse msg;
  try {
    while (reader->Read(&msg)) {
      {
        std::lock_guard lk(mu);
        last = std::chrono::steady_clock::now();
      }
      check.feed(msg.blob(), msg.remaining_bytes());
      if (!msg.blob().empty()) on_data(msg.blob());
    }
  } catch (...) {
    ctx.TryCancel();
    stop_watchdog();
    reader->Finish();
    throw;
  }
  grpc::Status s = reader->Finish();
  stop_watchdog();
  std::string progress = " after " + std::to_string(check.received()) + " of " +
                         (check.db_size() ? std::to_string(check.db_size() + kSnapshotHashSize) : std::string("?")) + " bytes";
  if (cancelled) throw Error(Errc::interrupted, "etcd snapshot from '" + impl_->opt.endpoint + "' cancelled" + progress);
  if (stalled)
    throw Error(Errc::io, "etcd snapshot from '" + impl_->opt.endpoint + "' stalled: nothing came for " +
                              std::to_string(stall.count() / 1000) + " s" + progress);
  if (!s.ok()) impl_->fail("Snapshot", s, progress);
  check.finish();
  return SnapshotResult{check.db_size(), check.received(), check.sha256_hex()};
}

}  // namespace cairn::agent::etcd
