#pragma once
// The fleet side of the controller: one session per connected agent over the
// ROUTER socket, Register, heartbeats both ways with liveness counting, plan
// delivery, acknowledgements, progress and task results.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "controller/catalog/catalog.h"
#include "controller/config.h"
#include "controller/keyfiles.h"
#include "proto/cairn.pb.h"

namespace cairn::controller {

using Clock = std::chrono::steady_clock;

// A WAL archive's gaps as its agent last found them, one line each
// ("timeline 1: 000000010000000000000005 (1 segment) missing, 000000010000000000000006
// archived after it"), or why the check failed.
std::vector<std::string> wal_gap_lines(const cairn::v1::WalArchiveStatus& w);

class Fleet {
 public:
  Fleet(zmq::socket_t& socket, catalog::Catalog& catalog, const ControllerConfig& config, std::string active_key_id);

  // One message as the ROUTER delivered it: [routing id][frames...]. Never
  // throws: bad input is answered or dropped.
  void on_message(std::vector<zmq::message_t>& frames);
  // The same after ZMQ: the sender's routing id, its CURVE key as the ZAP
  // handler authenticated it, its connection's fd (-1: unknown) and the body
  // frames. on_message() ends here; the fuzz target (tests/fuzz) starts here.
  void on_frames(const std::string& routing_id, const CurveKey& key, int fd, const std::vector<std::string>& body);
  // Heartbeats, liveness, plan expiry, progress flush; call often (≥ 10/s).
  void tick();
  // The loop read every message waiting on the fleet socket (it found it
  // empty). Liveness counts an agent's silence only up to this moment: a
  // controller busy for longer than the liveness timeout (10,000 results to
  // record) has messages queued unread, and must not take its own backlog
  // for agents gone silent.
  void caught_up() { caught_up_at_ = Clock::now(); }

  // Sends the agent's undelivered plans when it is connected and registered.
  void deliver(const std::string& agent_id) { deliver(std::vector<std::string>{agent_id}); }
  // The same for many agents (a set over the fleet): one read and one write
  // transaction for all of them, not one per plan.
  void deliver(std::vector<std::string> agent_ids);
  // Called as an approved agent registers, before its plans are delivered
  // (the controller makes the rollbacks ended restores owe it: Orders).
  void set_on_registered(std::function<void(const std::string& agent_id)> f) { on_registered_ = std::move(f); }
  // Revocation: tells the agent, closes its connection, fails its open tasks.
  void revoke(const std::string& agent_id);
  // Approval of a pending agent that is connected: close its connection so it
  // registers again, now as approved.
  void reconnect(const std::string& agent_id);

  // After a key rotation: new signing key id for RegisterReply, and the
  // announcements sent to every connected agent that does not trust it yet.
  // Returns how many agents were sent an announcement.
  size_t rotated(const std::string& new_key_id);

  // Records the plan acknowledgements read since the last call, in one
  // transaction (Server::on_fleet calls it after each batch of messages).
  void flush_plan_acks();
  // Records the task results read since the last call (plan acks and progress
  // first), in one transaction, then acknowledges them (Server::on_fleet calls
  // it after each batch of messages, tick() and on_register before they look
  // at tasks).
  void flush_task_results();

  bool connected(const std::string& agent_id) const;
  // Whether the connected agent announced `feature` in its Register.
  bool supports(const std::string& agent_id, const std::string& feature) const;
  size_t connected_count() const;
  // Requests and retries the agents' tasks reported against each repository's
  // store since this controller started (an object store's; /metrics).
  struct StorageCount {
    uint64_t requests = 0, retries = 0;
  };
  std::map<std::string, StorageCount> storage_counts() const;
  // The continuous WAL archives agents reported in their heartbeats, by
  // (agent id, component): kept when an agent goes away (its age then shows).
  // An agent not connected now archives nothing: its rows say so as their
  // newest failure (the files wait on the server, PostgreSQL retries).
  std::map<std::pair<std::string, std::string>, cairn::v1::WalArchiveStatus> wal_archives() const;
  // What in-place restores set aside on each agent's disk, as its latest
  // heartbeat reported (agent id -> copies; docs/set-aside.md). An agent
  // that reports none (older) is absent; kept when it goes away.
  const std::map<std::string, std::vector<cairn::v1::SetAsideCopy>>& set_aside() const { return set_aside_; }

 private:
  std::function<void(const std::string&)> on_registered_;
  struct Session {
    std::string routing_id;
    CurveKey key{};
    std::string agent_id;  // empty until Register
    bool registered = false;
    bool approved = false;
    int fd = -1;  // the connection's socket, to cut it on revocation
    Clock::time_point last_recv, last_send;
    Clock::time_point last_touch;
    std::set<std::string> trusted;    // controller key ids the agent trusts (Register, then acks)
    std::set<std::string> expected;   // what it will trust once the announcements sent are applied
    std::set<std::string> announced;  // announcement ids sent on this connection (never sent twice)
    // Task and plan ids the catalog confirmed as this agent's: a task's agent
    // never changes, so progress many times a second needs no catalog read.
    std::set<std::string> owned_tasks, owned_plans;
    std::set<std::string> features;  // Register.features
  };

  void handle(Session& s, cairn::v1::AgentMessage& m);
  // The ownership gate (ownership.h), before anything changes for a message:
  // ids of other agents' tasks or plans are dropped from lists (Heartbeat,
  // Register) and refuse the message otherwise. False when refused.
  bool admit(Session& s, cairn::v1::AgentMessage& m);
  // Log line and audit event for a message naming another agent's ids, at
  // most once a minute per agent (the rest are counted and summarised).
  void note_foreign(const Session& s, const cairn::v1::AgentMessage& m, const std::set<std::string>& ids);
  void on_register(Session& s, const cairn::v1::Register& r);
  void on_plan_ack(Session& s, const cairn::v1::PlanAck& a);
  // Records one acknowledgement; returns why it was ignored, or "".
  std::string record_plan_ack(catalog::Tx& tx, const std::string& agent_id, const cairn::v1::PlanAck& a);
  void on_task_result(Session& s, const cairn::v1::TaskResult& r);
  // Records one result; returns why it was ignored, or "".
  std::string record_task_result(catalog::Tx& tx, const std::string& agent_id, const cairn::v1::TaskResult& r);
  void on_key_ack(Session& s, const cairn::v1::KeyAnnouncementAck& a);
  // Sends, oldest first, the announcements that lead from the keys the agent
  // trusts to the active key. Returns the number sent.
  size_t send_announcements(Session& s);
  void reconcile(Session& s, const cairn::v1::Register& r);

  bool send(Session& s, const cairn::v1::ControllerMessage& m);
  void send_error(const std::string& routing_id, cairn::v1::ErrorCode code, const std::string& detail);
  void cut(Session& s);
  void lose(const std::string& agent_id, cairn::v1::ErrorCode code, const std::string& detail, bool include_pending);
  void flush_progress();
  // Writes last_seen_at of the agents heard from since the last flush, in one commit.
  void flush_touches();
  void sweep();
  std::chrono::milliseconds timeout() const;
  Session* session_of(const std::string& agent_id);
  void hold_restore_results();  // see held_

  std::map<std::pair<std::string, std::string>, cairn::v1::WalArchiveStatus> wal_;
  std::map<std::pair<std::string, std::string>, int64_t> wal_at_;
  std::map<std::string, std::vector<cairn::v1::SetAsideCopy>> set_aside_;  // when each was last reported
  zmq::socket_t& socket_;
  catalog::Catalog& catalog_;
  const ControllerConfig& config_;
  std::string active_key_id_;

  std::map<std::string, Session> sessions_;                                      // routing id -> session
  std::map<std::string, std::string> by_agent_;                                  // agent id -> routing id
  std::map<std::string, Clock::time_point> gone_;                                // agent id -> since when no session (in-flight tasks)
  std::map<std::string, Clock::time_point> unconfirmed_;                         // task id -> deadline for its result
  std::map<std::string, std::pair<std::string, cairn::v1::Progress>> progress_;  // task id -> (agent id, latest)
  std::vector<std::pair<std::string, cairn::v1::PlanAck>> plan_acks_;            // (agent id, ack), in arrival order
  std::vector<std::string> touched_;                                             // agents whose last_seen_at is due (flush_touches)
  Clock::time_point last_heartbeats_{};                                          // the last pass that sent heartbeats
  struct PendingResult {
    std::string agent_id, routing_id;
    cairn::v1::TaskResult result;
  };
  std::vector<PendingResult> results_;  // in arrival order, until flush_task_results
  // Results of a restore's steps held back in this process's first liveness
  // timeout while a member of that restore has not registered again
  // (flush_task_results): recorded when every member is back or the timeout
  // ends, so the step the result completes is not made while members are
  // still on their way back to a restarted controller.
  std::vector<PendingResult> held_;
  const Clock::time_point started_ = Clock::now();
  // Revoked connections: messages from them are dropped at once, the TCP
  // connection is shut a moment later so the AGENT_REVOKED reply leaves first.
  std::map<std::string, std::pair<int, Clock::time_point>> cutting_;  // routing id -> (fd, when)
  struct Noted {
    Clock::time_point at{};
    uint64_t suppressed = 0;
  };
  std::map<std::string, Noted> foreign_noted_;  // agent id -> last foreign-id note
  Clock::time_point last_sweep_{};
  Clock::time_point caught_up_at_ = Clock::now();
  Clock::time_point last_flush_{};
  mutable std::mutex storage_mu_;
  std::map<std::string, StorageCount> storage_;  // by repository name
};

}  // namespace cairn::controller
