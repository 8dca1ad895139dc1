#pragma once
// The operator socket's client: a DEALER with CURVE, the operator's keypair
// and the controller's public key read from files (never from argv).
#include <CLI/CLI.hpp>
#include <string>

#include "proto/cairn.pb.h"

namespace cairn::ctl {

struct OpOptions {
  std::string controller = "tcp://127.0.0.1:7421";
  std::string key_dir;  // operator-curve.key, operator-curve.pub, controller-curve.pub
  double timeout_s = 10;
  bool json = false;
};

// Adds --controller, --key-dir, --timeout and --json (with their CAIRN_* variables).
void add_op_options(CLI::App* cmd, OpOptions& o);

// One request, one response. Throws cairn::Error when the controller cannot be
// reached, refuses the key, or answers with a code other than OK (the message
// then carries the code's name and the controller's detail).
cairn::v1::OperatorResponse op_call(const OpOptions& o, cairn::v1::OperatorRequest request);

// Exit code for a finished set or restore: 0 complete, 3 partial, 1 failed.
int exit_code_for_state(cairn::v1::SetState s);
std::string proto_json(const google::protobuf::Message& m);
// The same bytes as proto_json(list), printed agent by agent: with default
// values printed, protobuf's printer first builds a tree of the whole
// message (10,000 agents: 0.3 s and 115 MB in cairnctl).
std::string agent_list_json(const cairn::v1::AgentList& list);

// --label NAME=VALUE options into a selector (replacing its labels when any
// are given). Throws cairn::Error(invalid_input) for one without '='.
void set_labels(const std::vector<std::string>& given, cairn::v1::Selector& selector);

}  // namespace cairn::ctl
