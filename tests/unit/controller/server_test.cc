// The controller daemon end to end on loopback, in one process: real CURVE
// sockets, the ZAP handler, the catalog, signed plans. The agents here are
// minimal DEALERs speaking docs/protocol.md by hand.
#include "controller/server.h"

#include <google/protobuf/stubs/logging.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <functional>
#include <optional>
#include <thread>
#include <zmq.hpp>

#include "common/plan/replay_journal.h"
#include "common/plan/trust_store.h"
#include "common/plan/verify_plan.h"
#include "controller/catalog/catalog_fixture.h"
#include "controller/keyfiles.h"
#include "proto/protocol.h"

using namespace cairn::controller;
namespace v1 = cairn::v1;
using namespace std::chrono_literals;

namespace {

int64_t unix_now() { return int64_t(std::time(nullptr)); }

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

// A running controller with its own keys and catalog in a temp dir.
struct Harness {
  explicit Harness(std::function<void(ControllerConfig&)> t = {}) : tweak(std::move(t)) {}
  std::function<void(ControllerConfig&)> tweak;  // settings of this test, before the server starts
  cairn::catalog::test::TempDir dir;
  InitializedKeys keys = init_keys(dir.file("keys"));
  ControllerConfig config = make_config();
  std::unique_ptr<Server> server = std::make_unique<Server>(config);
  std::atomic<bool> stop{false};
  std::thread loop{[this] { server->run(stop); }};
  zmq::context_t ctx{1};

  ControllerConfig make_config() {
    ControllerConfig c;
    c.controller_id = "test-ctl";
    c.data_dir = dir.file("data");
    c.key_dir = dir.file("keys");
    c.fleet_listen = "tcp://127.0.0.1:*";
    c.operator_listen = "tcp://127.0.0.1:*";
    // Test agents send no heartbeats: an agent is lost only after 25 x 200 ms
    // of silence, so a loaded or sanitized run never loses one between two
    // steps. The tests about loss shorten it (quick_loss).
    c.heartbeat_interval_ms = 200;
    c.liveness = 25;
    c.operator_key_files["admin"] = dir.file("keys/operator-curve.pub");
    if (tweak) tweak(c);
    return c;
  }
  ~Harness() {
    stop = true;
    loop.join();
  }
  // Stops the controller and starts a new one on the same catalog and keys.
  void restart() {
    stop = true;
    loop.join();
    config.fleet_listen = server->fleet_endpoint();  // same port, so agents find it again
    config.operator_listen = server->operator_endpoint();
    server.reset();
    stop = false;
    server = std::make_unique<Server>(config);
    loop = std::thread([this] { server->run(stop); });
  }

  zmq::socket_t client(const CurveKeypair& kp, const std::string& endpoint) {
    zmq::socket_t s(ctx, zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::curve_serverkey, keys.controller_curve);
    s.set(zmq::sockopt::curve_publickey, kp.public_z85);
    s.set(zmq::sockopt::curve_secretkey, kp.secret_z85);
    s.connect(endpoint);
    return s;
  }

  v1::OperatorResponse op(v1::OperatorRequest q) {
    CurveKeypair kp{slurp(dir.file("keys/operator-curve.pub")), slurp(dir.file("keys/operator-curve.key"))};
    auto s = client(kp, server->operator_endpoint());
    q.set_request_id("r1");
    std::string body = q.SerializeAsString();
    s.send(zmq::buffer(cairn::proto::kOperatorProtocolId), zmq::send_flags::sndmore);
    s.send(zmq::buffer(body));
    zmq::pollitem_t it{s.handle(), 0, ZMQ_POLLIN, 0};
    REQUIRE(zmq::poll(&it, 1, 5s) == 1);
    zmq::message_t id, m;
    (void)s.recv(id);
    (void)s.recv(m);
    v1::OperatorResponse r;
    REQUIRE(r.ParseFromArray(m.data(), int(m.size())));
    return r;
  }
};

// For the tests about a lost agent: lost after 3 x 200 ms of silence.
void quick_loss(ControllerConfig& c) { c.liveness = 3; }

void send_agent(zmq::socket_t& s, const v1::AgentMessage& m) {
  std::string body = m.SerializeAsString();
  s.send(zmq::buffer(cairn::proto::kFleetProtocolId), zmq::send_flags::sndmore);
  s.send(zmq::buffer(body));
}

// The next controller message that is not a heartbeat, or nothing by timeout.
// The next message but heartbeats (and result acknowledgements, unless asked for).
std::optional<v1::ControllerMessage> recv_agent(zmq::socket_t& s, std::chrono::milliseconds timeout = 3000ms, bool skip_acks = true) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    zmq::pollitem_t it{s.handle(), 0, ZMQ_POLLIN, 0};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (zmq::poll(&it, 1, left) == 0) break;
    zmq::message_t id, m;
    (void)s.recv(id);
    if (!id.more()) continue;
    (void)s.recv(m);
    v1::ControllerMessage c;
    if (!c.ParseFromArray(m.data(), int(m.size()))) continue;
    if (c.has_heartbeat() || (skip_acks && c.has_result_ack())) continue;
    return c;
  }
  return std::nullopt;
}

v1::AgentMessage register_msg(const std::string& name) {
  v1::AgentMessage m;
  auto* r = m.mutable_register_();
  r->set_agent_name(name);
  r->set_hostname(name + ".local");
  r->set_agent_version("test");
  auto* c = r->add_components();
  c->set_name("etc");
  c->set_driver("files");
  c->set_can_restore(true);
  return m;
}

template <class Pred>
bool eventually(Pred p, std::chrono::milliseconds timeout = 5000ms) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (p()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return p();
}

v1::AgentInfo agent_with_key(Harness& h, const std::string& z85) {
  v1::OperatorRequest q;
  q.mutable_agent_list();
  auto r = h.op(q);
  for (const auto& a : r.agent_list().agents())
    if (a.curve_public_key() == z85) return a;
  return {};
}

// An approved agent that registered and holds the controller's signing key.
struct TestAgent {
  CurveKeypair kp = generate_curve_keypair();
  zmq::socket_t sock;
  std::string id;

  TestAgent(Harness& h, const std::string& name) {
    std::string pending;
    {
      // First contact: refused by ZAP, recorded as pending, never answered.
      auto probe = h.client(kp, h.server->fleet_endpoint());
      send_agent(probe, register_msg(name));
      REQUIRE(eventually([&] {
        auto a = agent_with_key(h, kp.public_z85);
        pending = a.state() == v1::AGENT_STATE_PENDING ? a.agent_id() : "";
        return !pending.empty();
      }));
      REQUIRE_FALSE(recv_agent(probe, 50ms));
    }
    v1::OperatorRequest q;
    q.mutable_agent_approve()->set_agent(pending);
    REQUIRE(h.op(q).code() == v1::ERROR_CODE_OK);
    sock = h.client(kp, h.server->fleet_endpoint());
    send_agent(sock, register_msg(name));
    auto reply = recv_agent(sock);
    REQUIRE(reply);
    REQUIRE(reply->has_register_reply());
    REQUIRE(reply->register_reply().state() == v1::AGENT_STATE_APPROVED);
    id = reply->register_reply().agent_id();
  }

  // Registers again on the same connection, as an agent does: a test agent
  // sends no heartbeats, so one left idle while the test sets up another may
  // be lost under quick_loss (3 x 200 ms).
  void refresh(const std::string& name) {
    send_agent(sock, register_msg(name));
    auto reply = recv_agent(sock);
    REQUIRE(reply);
    REQUIRE(reply->has_register_reply());
    REQUIRE(reply->register_reply().agent_id() == id);
  }
};

}  // namespace

TEST_CASE("a backup runs through enrolment, approval, a signed plan and a result") {
  google::protobuf::SetLogHandler(nullptr);
  Harness h;
  TestAgent agent(h, "node-a");

  v1::OperatorRequest create;
  create.mutable_backup_create();
  auto created = h.op(create);
  REQUIRE(created.code() == v1::ERROR_CODE_OK);
  std::string set_id = created.backup_set().backup_set_id();
  REQUIRE(created.backup_set().tasks_size() == 1);

  auto plan_msg = recv_agent(agent.sock);
  REQUIRE(plan_msg);
  REQUIRE(plan_msg->body_case() == v1::ControllerMessage::kPlan);
  // The agent's gate accepts it: signed by the controller key, for this agent.
  cairn::plan::TrustStore trust;
  cairn::plan::PublicKey pub{};
  REQUIRE(cairn::plan::parse_public_key(h.keys.signing_public, pub));
  trust.add(pub, unix_now(), "config");
  cairn::plan::ReplayJournal journal;
  auto agent_key = *z85_to_key(agent.kp.public_z85);
  auto verdict = cairn::plan::accept_plan(cairn::as_bytes(plan_msg->plan()), trust, agent_key, unix_now(), journal);
  REQUIRE(verdict.ok());
  const auto& plan = verdict.value().plan;
  CHECK(plan.sequence() == 1);
  CHECK(plan.controller_id() == "test-ctl");
  REQUIRE(plan.tasks_size() == 1);
  CHECK(plan.tasks(0).component() == "etc");

  v1::AgentMessage ack;
  ack.mutable_plan_ack()->set_plan_id(plan.plan_id());
  ack.mutable_plan_ack()->set_accepted(true);
  ack.mutable_plan_ack()->set_sequence(plan.sequence());
  send_agent(agent.sock, ack);
  v1::AgentMessage prog;
  prog.mutable_progress()->set_task_id(plan.tasks(0).task_id());
  prog.mutable_progress()->set_phase(v1::PHASE_STREAM);
  prog.mutable_progress()->set_bytes_done(500);
  prog.mutable_progress()->set_bytes_total(1000);
  send_agent(agent.sock, prog);

  v1::OperatorRequest show;
  show.mutable_backup_show()->set_backup_set_id(set_id);
  REQUIRE(eventually([&] {
    auto t = h.op(show).backup_set().tasks(0);
    return t.state() == v1::TASK_STATE_RUNNING && t.progress().bytes_done() == 500;
  }));

  v1::AgentMessage result;
  auto* r = result.mutable_task_result();
  r->set_task_id(plan.tasks(0).task_id());
  r->set_plan_id(plan.plan_id());
  r->set_outcome(v1::TASK_OUTCOME_SUCCEEDED);
  r->set_snapshot_id("snap-1");
  r->set_manifest_digest(std::string(64, 'a'));
  send_agent(agent.sock, result);
  // The controller acknowledges the result (the agent stops keeping it).
  auto result_ack = recv_agent(agent.sock, 3000ms, /*skip_acks=*/false);
  REQUIRE(result_ack);
  REQUIRE(result_ack->has_result_ack());
  CHECK(result_ack->result_ack().task_ids(0) == plan.tasks(0).task_id());
  REQUIRE(eventually([&] { return h.op(show).backup_set().state() == v1::SET_STATE_COMPLETE; }));

  SECTION("a restore of that set refers to its snapshot and carries a safety backup") {
    v1::OperatorRequest rq;
    rq.mutable_restore()->set_backup_set_id(set_id);
    auto resp = h.op(rq);
    REQUIRE(resp.code() == v1::ERROR_CODE_OK);
    auto m = recv_agent(agent.sock);
    REQUIRE(m);
    auto v = cairn::plan::accept_plan(cairn::as_bytes(m->plan()), trust, agent_key, unix_now(), journal);
    REQUIRE(v.ok());
    CHECK(v.value().plan.sequence() == 2);
    REQUIRE(v.value().plan.tasks_size() == 1);
    const auto& t = v.value().plan.tasks(0);
    CHECK(t.kind() == v1::TASK_KIND_RESTORE);
    CHECK(t.snapshot().snapshot_id() == "snap-1");
    CHECK_FALSE(t.options().safety_backup_task_id().empty());
    // The agent saves the current state inside the restore task and reports its snapshot.
    v1::AgentMessage ack2;
    ack2.mutable_plan_ack()->set_plan_id(v.value().plan.plan_id());
    ack2.mutable_plan_ack()->set_accepted(true);
    send_agent(agent.sock, ack2);
    v1::AgentMessage res;
    res.mutable_task_result()->set_task_id(t.task_id());
    res.mutable_task_result()->set_outcome(v1::TASK_OUTCOME_SUCCEEDED);
    res.mutable_task_result()->set_safety_snapshot_id("safety-1");
    send_agent(agent.sock, res);
    v1::OperatorRequest rshow;
    rshow.mutable_restore_show()->set_restore_id(resp.restore().restore_id());
    REQUIRE(eventually([&] { return h.op(rshow).restore().state() == v1::SET_STATE_COMPLETE; }));
    auto info = h.op(rshow).restore();
    REQUIRE(info.tasks_size() == 2);  // safety backup first, then the restore
    CHECK(info.tasks(0).kind() == v1::TASK_KIND_BACKUP);
    CHECK(info.tasks(0).state() == v1::TASK_STATE_SUCCEEDED);
    CHECK(info.tasks(0).snapshot_id() == "safety-1");
  }
  SECTION("a rejected plan records the agent's reason on its task") {
    auto again = h.op(create);
    auto m = recv_agent(agent.sock);
    REQUIRE(m);
    auto v = cairn::plan::verify_plan(cairn::as_bytes(m->plan()), trust, agent_key, unix_now(), journal);
    REQUIRE(v.ok());
    v1::AgentMessage nack;
    nack.mutable_plan_ack()->set_plan_id(v.value().plan.plan_id());
    nack.mutable_plan_ack()->set_accepted(false);
    nack.mutable_plan_ack()->set_reason(v1::ERROR_CODE_EXPIRED);
    nack.mutable_plan_ack()->set_detail("plan 'x' expired");
    send_agent(agent.sock, nack);
    v1::OperatorRequest show2;
    show2.mutable_backup_show()->set_backup_set_id(again.backup_set().backup_set_id());
    REQUIRE(eventually([&] { return h.op(show2).backup_set().state() == v1::SET_STATE_FAILED; }));
    auto task = h.op(show2).backup_set().tasks(0);
    CHECK(task.state() == v1::TASK_STATE_REJECTED);
    REQUIRE(task.reasons_size() == 1);
    CHECK(task.reasons(0).code() == v1::ERROR_CODE_EXPIRED);
  }
}

TEST_CASE("a listener whose port is taken is named with its setting") {
  zmq::context_t ctx{1};
  zmq::socket_t holder(ctx, zmq::socket_type::router);
  holder.set(zmq::sockopt::linger, 0);
  holder.bind("tcp://127.0.0.1:*");
  const std::string taken = holder.get(zmq::sockopt::last_endpoint);
  REQUIRE_THROWS_WITH(Harness([&](ControllerConfig& c) { c.operator_listen = taken; }),
                      Catch::Contains("cannot listen on '" + taken + "' ([operator] listen): Address already in use") &&
                          Catch::Contains("another process holds that address"));
}

TEST_CASE("garbage frames are answered or dropped and the controller keeps serving") {
  google::protobuf::SetLogHandler(nullptr);
  Harness h;
  TestAgent agent(h, "node-g");
  agent.sock.send(zmq::str_buffer("just one frame"));
  auto e1 = recv_agent(agent.sock);
  REQUIRE(e1);
  CHECK(e1->error().code() == v1::ERROR_CODE_PROTOCOL_UNSUPPORTED);
  agent.sock.send(zmq::str_buffer("CAIRN-FLEET/1"), zmq::send_flags::sndmore);
  agent.sock.send(zmq::str_buffer("\xff\xfe garbage"));
  auto e2 = recv_agent(agent.sock);
  REQUIRE(e2);
  CHECK(e2->error().code() == v1::ERROR_CODE_MALFORMED_MESSAGE);
  for (int i = 0; i < 10; ++i) agent.sock.send(zmq::str_buffer("x"), zmq::send_flags::sndmore);
  agent.sock.send(zmq::str_buffer("x"));
  REQUIRE(recv_agent(agent.sock));
  // Still serving: a heartbeat is accepted silently and the operator API answers.
  v1::AgentMessage hb;
  hb.mutable_heartbeat()->set_sent_at(unix_now());
  send_agent(agent.sock, hb);
  CHECK_FALSE(recv_agent(agent.sock, 300ms));
  v1::OperatorRequest q;
  q.mutable_status();
  auto st = h.op(q);
  CHECK(st.status().agents_connected() == 1);
  CHECK(st.status().agents_approved() == 1);
}

TEST_CASE("a revoked agent is cut off at once and its open tasks fail") {
  google::protobuf::SetLogHandler(nullptr);
  Harness h;
  TestAgent agent(h, "node-r");
  v1::OperatorRequest create;
  create.mutable_backup_create();
  auto set = h.op(create).backup_set();
  REQUIRE(recv_agent(agent.sock));  // the plan

  v1::OperatorRequest revoke;
  revoke.mutable_agent_revoke()->set_agent("node-r");
  REQUIRE(h.op(revoke).code() == v1::ERROR_CODE_OK);
  auto m = recv_agent(agent.sock);
  REQUIRE(m);
  CHECK(m->error().code() == v1::ERROR_CODE_AGENT_REVOKED);
  // Nothing more gets through, even after the DEALER reconnects.
  std::this_thread::sleep_for(300ms);
  send_agent(agent.sock, register_msg("node-r"));
  CHECK_FALSE(recv_agent(agent.sock, 800ms));

  v1::OperatorRequest show;
  show.mutable_backup_show()->set_backup_set_id(set.backup_set_id());
  auto s = h.op(show).backup_set();
  CHECK(s.state() == v1::SET_STATE_FAILED);
  CHECK(s.tasks(0).reasons(0).code() == v1::ERROR_CODE_AGENT_REVOKED);
}

TEST_CASE("an agent that goes silent is lost and its running task fails") {
  google::protobuf::SetLogHandler(nullptr);
  Harness h(quick_loss);
  TestAgent agent(h, "node-l");
  v1::OperatorRequest create;
  create.mutable_backup_create();
  auto set = h.op(create).backup_set();
  auto m = recv_agent(agent.sock);
  REQUIRE(m);
  v1::SignedEnvelope env;
  REQUIRE(env.ParseFromString(m->plan()));
  v1::PlanPayload plan;
  REQUIRE(plan.ParseFromString(env.payload()));
  v1::AgentMessage ack;
  ack.mutable_plan_ack()->set_plan_id(plan.plan_id());
  ack.mutable_plan_ack()->set_accepted(true);
  send_agent(agent.sock, ack);
  // Then silence: liveness is 3 x 200 ms.
  v1::OperatorRequest show;
  show.mutable_backup_show()->set_backup_set_id(set.backup_set_id());
  REQUIRE(eventually([&] { return h.op(show).backup_set().state() == v1::SET_STATE_FAILED; }));
  auto t = h.op(show).backup_set().tasks(0);
  CHECK(t.state() == v1::TASK_STATE_FAILED);
  CHECK(t.reasons(0).code() == v1::ERROR_CODE_AGENT_LOST);
}

TEST_CASE("a plan for an offline agent expires into missed") {
  google::protobuf::SetLogHandler(nullptr);
  Harness h(quick_loss);
  h.config.plan_validity_seconds = 1;  // read by Orders at each request
  {
    TestAgent agent(h, "node-m");
    agent.sock.close();  // goes away before the backup
  }
  // Wait until the controller counts the agent as lost.
  v1::OperatorRequest st;
  st.mutable_status();
  REQUIRE(eventually([&] { return h.op(st).status().agents_connected() == 0; }));
  v1::OperatorRequest create;
  create.mutable_backup_create();
  auto set = h.op(create).backup_set();
  v1::OperatorRequest show;
  show.mutable_backup_show()->set_backup_set_id(set.backup_set_id());
  REQUIRE(eventually([&] { return h.op(show).backup_set().state() == v1::SET_STATE_FAILED; }, 5000ms));
  auto t = h.op(show).backup_set().tasks(0);
  CHECK(t.state() == v1::TASK_STATE_MISSED);
  CHECK(t.reasons(0).code() == v1::ERROR_CODE_PLAN_MISSED);
}

TEST_CASE("after a controller restart a task whose agent does not return fails with a reason") {
  google::protobuf::SetLogHandler(nullptr);
  Harness h(quick_loss);
  std::string set_id;
  {
    TestAgent agent(h, "node-x");
    v1::OperatorRequest create;
    create.mutable_backup_create();
    set_id = h.op(create).backup_set().backup_set_id();
    auto m = recv_agent(agent.sock);
    REQUIRE(m);
    v1::SignedEnvelope env;
    REQUIRE(env.ParseFromString(m->plan()));
    v1::PlanPayload plan;
    REQUIRE(plan.ParseFromString(env.payload()));
    v1::AgentMessage ack;
    ack.mutable_plan_ack()->set_plan_id(plan.plan_id());
    ack.mutable_plan_ack()->set_accepted(true);
    send_agent(agent.sock, ack);
    v1::OperatorRequest show;
    show.mutable_backup_show()->set_backup_set_id(set_id);
    REQUIRE(eventually([&] { return h.op(show).backup_set().tasks(0).state() == v1::TASK_STATE_ACCEPTED; }));
    h.restart();  // the agent goes away with it
  }
  v1::OperatorRequest show;
  show.mutable_backup_show()->set_backup_set_id(set_id);
  CHECK(h.op(show).backup_set().state() == v1::SET_STATE_RUNNING);  // the catalog survived
  REQUIRE(eventually([&] { return h.op(show).backup_set().state() == v1::SET_STATE_FAILED; }));
  auto t = h.op(show).backup_set().tasks(0);
  CHECK(t.reasons(0).code() == v1::ERROR_CODE_AGENT_LOST);
}

TEST_CASE("after a controller restart a returning agent's result is taken") {
  google::protobuf::SetLogHandler(nullptr);
  Harness h;
  TestAgent agent(h, "node-y");
  v1::OperatorRequest create;
  create.mutable_backup_create();
  std::string set_id = h.op(create).backup_set().backup_set_id();
  auto m = recv_agent(agent.sock);
  REQUIRE(m);
  v1::SignedEnvelope env;
  REQUIRE(env.ParseFromString(m->plan()));
  v1::PlanPayload plan;
  REQUIRE(plan.ParseFromString(env.payload()));
  v1::AgentMessage ack;
  ack.mutable_plan_ack()->set_plan_id(plan.plan_id());
  ack.mutable_plan_ack()->set_accepted(true);
  send_agent(agent.sock, ack);
  std::this_thread::sleep_for(200ms);
  h.restart();
  // The agent reconnects by itself (same DEALER) and registers with its running task.
  auto reg = register_msg("node-y");
  reg.mutable_register_()->set_highest_sequence(plan.sequence());
  reg.mutable_register_()->add_running_task_ids(plan.tasks(0).task_id());
  send_agent(agent.sock, reg);
  auto reply = recv_agent(agent.sock, 5000ms);
  REQUIRE(reply);
  REQUIRE(reply->has_register_reply());
  v1::AgentMessage result;
  auto* r = result.mutable_task_result();
  r->set_task_id(plan.tasks(0).task_id());
  r->set_outcome(v1::TASK_OUTCOME_PARTIAL);
  r->set_snapshot_id("snap-y");
  r->set_manifest_digest(std::string(64, 'b'));
  auto* why = r->add_reasons();
  why->set_code(v1::ERROR_CODE_ITEM_SKIPPED);
  why->set_detail("cannot read '/etc/x'");
  send_agent(agent.sock, result);
  v1::OperatorRequest show;
  show.mutable_backup_show()->set_backup_set_id(set_id);
  REQUIRE(eventually([&] { return h.op(show).backup_set().state() == v1::SET_STATE_PARTIAL; }));
  CHECK(h.op(show).backup_set().tasks(0).reasons(0).code() == v1::ERROR_CODE_ITEM_SKIPPED);
}

namespace {

// node-b accepts a backup plan, then re-registers without it running (it
// forgot the task, e.g. it restarted): the controller waits one liveness
// timeout for its result. Returns the set id.
std::string task_forgotten_by_b(Harness& h, TestAgent& b, std::string& task_id) {
  v1::OperatorRequest create;
  create.mutable_backup_create()->mutable_selector()->add_nodes("node-b");
  auto set = h.op(create).backup_set();
  REQUIRE(set.tasks_size() == 1);
  task_id = set.tasks(0).task_id();
  auto m = recv_agent(b.sock);
  REQUIRE(m);
  v1::SignedEnvelope env;
  REQUIRE(env.ParseFromString(m->plan()));
  v1::PlanPayload plan;
  REQUIRE(plan.ParseFromString(env.payload()));
  v1::AgentMessage ack;
  ack.mutable_plan_ack()->set_plan_id(plan.plan_id());
  ack.mutable_plan_ack()->set_accepted(true);
  send_agent(b.sock, ack);
  v1::OperatorRequest show;
  show.mutable_backup_show()->set_backup_set_id(set.backup_set_id());
  REQUIRE(eventually([&] { return h.op(show).backup_set().tasks(0).state() == v1::TASK_STATE_ACCEPTED; }));
  auto reg = register_msg("node-b");
  reg.mutable_register_()->set_highest_sequence(plan.sequence());
  send_agent(b.sock, reg);
  auto reply = recv_agent(b.sock);
  REQUIRE(reply);
  REQUIRE(reply->has_register_reply());
  return set.backup_set_id();
}

}  // namespace

TEST_CASE("another agent's heartbeat or progress does not keep a lost task alive") {
  google::protobuf::SetLogHandler(nullptr);
  Harness h(quick_loss);
  TestAgent a(h, "node-a");
  TestAgent b(h, "node-b");
  std::string task_id;
  std::string set_id = task_forgotten_by_b(h, b, task_id);
  bool by_progress = GENERATE(false, true);
  a.refresh("node-a");
  // node-a (compromised) names node-b's task for longer than the liveness
  // timeout (3 x 200 ms) while node-b keeps its own connection alive.
  for (int i = 0; i < 15; ++i) {
    v1::AgentMessage m;
    if (by_progress) {
      m.mutable_progress()->set_task_id(task_id);
      m.mutable_progress()->set_phase(v1::PHASE_STREAM);
      m.mutable_progress()->set_bytes_done(uint64_t(i));
    } else {
      m.mutable_heartbeat()->set_sent_at(unix_now());
      m.mutable_heartbeat()->add_running_task_ids(task_id);
    }
    send_agent(a.sock, m);
    v1::AgentMessage hb;
    hb.mutable_heartbeat()->set_sent_at(unix_now());
    send_agent(b.sock, hb);
    std::this_thread::sleep_for(100ms);
  }
  v1::OperatorRequest show;
  show.mutable_backup_show()->set_backup_set_id(set_id);
  REQUIRE(eventually([&] { return h.op(show).backup_set().state() == v1::SET_STATE_FAILED; }, 2000ms));
  auto t = h.op(show).backup_set().tasks(0);
  CHECK(t.state() == v1::TASK_STATE_FAILED);
  CHECK(t.reasons(0).code() == v1::ERROR_CODE_AGENT_LOST);
  CHECK(t.progress().bytes_done() == 0);  // node-a's progress never reached it
  // The attempt is in the audit trail, under node-a.
  bool audited = false;
  cairn::catalog::Catalog cat = cairn::catalog::Catalog::open(h.config.catalog_path());
  for (const auto& e : cat.read([](const cairn::catalog::Tx& tx) { return tx.audit_events(); }))
    if (e.action == "agent.foreign_ids" && e.target == "agent:" + a.id && e.details.find(task_id) != std::string::npos) audited = true;
  CHECK(audited);
}

TEST_CASE("a task result or plan ack naming another agent's task or plan is refused and changes nothing") {
  google::protobuf::SetLogHandler(nullptr);
  Harness h;
  TestAgent a(h, "node-a");
  TestAgent b(h, "node-b");
  v1::OperatorRequest create;
  create.mutable_backup_create()->mutable_selector()->add_nodes("node-b");
  auto set = h.op(create).backup_set();
  auto m = recv_agent(b.sock);
  REQUIRE(m);
  v1::SignedEnvelope env;
  REQUIRE(env.ParseFromString(m->plan()));
  v1::PlanPayload plan;
  REQUIRE(plan.ParseFromString(env.payload()));

  v1::AgentMessage nack;  // node-a rejects node-b's plan
  nack.mutable_plan_ack()->set_plan_id(plan.plan_id());
  nack.mutable_plan_ack()->set_accepted(false);
  nack.mutable_plan_ack()->set_reason(v1::ERROR_CODE_EXPIRED);
  a.refresh("node-a");
  send_agent(a.sock, nack);
  v1::AgentMessage res;  // and reports node-b's task as failed
  res.mutable_task_result()->set_task_id(plan.tasks(0).task_id());
  res.mutable_task_result()->set_outcome(v1::TASK_OUTCOME_FAILED);
  res.mutable_task_result()->add_reasons()->set_detail("forged");
  send_agent(a.sock, res);
  auto err = recv_agent(a.sock);
  REQUIRE(err);
  CHECK(err->error().code() == v1::ERROR_CODE_UNEXPECTED_MESSAGE);
  CHECK(err->error().detail().find("of this agent") != std::string::npos);

  v1::OperatorRequest show;
  show.mutable_backup_show()->set_backup_set_id(set.backup_set_id());
  std::this_thread::sleep_for(200ms);
  auto t = h.op(show).backup_set().tasks(0);
  CHECK(t.state() == v1::TASK_STATE_SENT);
  CHECK(t.reasons_size() == 0);
}

TEST_CASE("connections with fresh keys add a bounded number of pending agents and audit events") {
  google::protobuf::SetLogHandler(nullptr);
  Harness h([](ControllerConfig& c) {
    c.max_pending_agents = 5;
    c.audit_refusals_per_minute = 10;
  });
  auto audited = [&] {
    cairn::catalog::Catalog cat = cairn::catalog::Catalog::open(h.config.catalog_path());
    return cat.read([](const cairn::catalog::Tx& tx) { return tx.audit_events(); });
  };
  size_t before = audited().size();
  {
    // 60 strangers, each with a fresh key, each trying to register.
    std::vector<zmq::socket_t> strangers;
    for (int i = 0; i < 60; ++i) {
      strangers.push_back(h.client(generate_curve_keypair(), h.server->fleet_endpoint()));
      send_agent(strangers.back(), register_msg("stranger-" + std::to_string(i)));
    }
    std::this_thread::sleep_for(2000ms);
  }
  v1::OperatorRequest q;
  q.mutable_agent_list();
  int pending = 0;
  auto listed = h.op(q);
  for (const auto& a : listed.agent_list().agents())
    if (a.state() == v1::AGENT_STATE_PENDING) ++pending;
  CHECK(pending > 0);
  CHECK(pending <= 5);
  auto events = audited();
  size_t added = events.size() - before;
  CHECK(added <= 10 + 10);  // the budget, plus the records of dropped pending agents
}

TEST_CASE("the controller applies the audit retention at start") {
  google::protobuf::SetLogHandler(nullptr);
  Harness h([](ControllerConfig& c) { c.audit_retention_events = 3; });
  TestAgent a(h, "node-a");
  TestAgent b(h, "node-b");
  auto events = [&] {
    cairn::catalog::Catalog cat = cairn::catalog::Catalog::open(h.config.catalog_path());
    return cat.read([](const cairn::catalog::Tx& tx) { return tx.audit_events(); });
  };
  REQUIRE(events().size() > 4);  // two enrolments and approvals
  h.restart();
  v1::OperatorRequest st;
  st.mutable_status();
  REQUIRE(h.op(st).code() == v1::ERROR_CODE_OK);  // the loop runs, the pass is done
  auto kept = events();
  REQUIRE(kept.size() <= 4);
  CHECK(kept.back().action == "audit.pruned");
  cairn::catalog::Catalog cat = cairn::catalog::Catalog::open(h.config.catalog_path());
  CHECK(cat.verify_audit_chain().ok);
}
