// Request/response over the operator socket, with handshake failures told
// apart from an absent controller.
#include "cairnctl/op_client.h"

#include <google/protobuf/util/json_util.h>

#include <chrono>
#include <cstring>
#include <zmq.hpp>

#include "cairnctl/cli.h"
#include "common/crypto/crypto.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "controller/keyfiles.h"
#include "proto/error_code.h"
#include "proto/protocol.h"

namespace cairn::ctl {

void add_op_options(CLI::App* cmd, OpOptions& o) {
  cmd->add_option("--controller", o.controller, "controller operator endpoint")->envname("CAIRN_CONTROLLER")->capture_default_str();
  cmd->add_option("--key-dir", o.key_dir, "directory with operator-curve.key/.pub and controller-curve.pub (from 'cairnctl keys init')")
      ->envname("CAIRN_OPERATOR_KEY_DIR");
  cmd->add_option("--timeout", o.timeout_s, "seconds to wait for the controller's answer")->capture_default_str();
  cmd->add_flag("--json", o.json, "machine-readable output");
}

std::string proto_json(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  opts.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, opts);
  return out;
}

std::string agent_list_json(const cairn::v1::AgentList& list) {
  // These are proto_json's bytes only while `agents` is the message's one
  // field: a field added to AgentList goes back to the whole-message printer.
  if (cairn::v1::AgentList::descriptor()->field_count() != 1) return proto_json(list);
  std::string out = "{\"agents\":[";
  for (int i = 0; i < list.agents_size(); ++i) {
    if (i) out += ',';
    out += proto_json(list.agents(i));
  }
  out += "]}";
  return out;
}

int exit_code_for_state(cairn::v1::SetState s) {
  switch (s) {
    case cairn::v1::SET_STATE_COMPLETE:
      return kExitOk;
    case cairn::v1::SET_STATE_PARTIAL:
      return kExitPartial;
    default:
      return kExitError;
  }
}

cairn::v1::OperatorResponse op_call(const OpOptions& o, cairn::v1::OperatorRequest request) {
  if (o.key_dir.empty()) throw Error(Errc::invalid_input, "no operator key: use --key-dir DIR or set CAIRN_OPERATOR_KEY_DIR");
  std::string secret = controller::read_curve_secret(o.key_dir + "/" + controller::kOperatorSecretFile);
  std::string pub = controller::read_curve_public(o.key_dir + "/" + controller::kOperatorPublicFile);
  std::string server = controller::read_curve_public(o.key_dir + "/" + controller::kCurvePublicFile);
  if (request.request_id().empty()) request.set_request_id(to_hex(crypto::random_array<8>()));

  zmq::context_t ctx(1);
  // Declared before the DEALER so it outlives it: the monitor must be read
  // until the monitored socket is closed.
  zmq::socket_t monitor(ctx, zmq::socket_type::pair);
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::curve_serverkey, server);
  s.set(zmq::sockopt::curve_publickey, pub);
  s.set(zmq::sockopt::curve_secretkey, secret);
  explicit_bzero(secret.data(), secret.size());
  s.set(zmq::sockopt::maxmsgsize, int64_t(cairn::proto::kMaxMessageBytes));
  std::string mon_ep = "inproc://op-monitor";
  zmq_socket_monitor(
      s.handle(), mon_ep.c_str(),
      ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_CONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
  bool tcp_connected = false, handshake_ok = false;
  monitor.connect(mon_ep);
  s.connect(o.controller);

  std::string body = request.SerializeAsString();
  s.send(zmq::buffer(cairn::proto::kOperatorProtocolId), zmq::send_flags::sndmore);
  s.send(zmq::buffer(body), zmq::send_flags::none);

  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(int64_t(o.timeout_s * 1000));
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      // A wrong server key gets no CURVE answer at all: the controller drops
      // a HELLO it cannot open. Say which of the two it is (issue 32).
      if (tcp_connected && !handshake_ok)
        throw Error(Errc::wrong_key, "the controller at '" + o.controller +
                                         "' accepted the connection but the CURVE handshake got no answer within " +
                                         std::to_string(int(o.timeout_s)) + " s: '" + o.key_dir + "/" + controller::kCurvePublicFile +
                                         "' may not be this controller's key (copy its controller-curve.pub), or something other than "
                                         "cairn-controller listens there");
      throw Error(Errc::io, "no answer from the controller at '" + o.controller + "' within " + std::to_string(int(o.timeout_s)) +
                                " s (is it running and listening there?)");
    }
    zmq::pollitem_t items[] = {{s.handle(), 0, ZMQ_POLLIN, 0}, {monitor.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 2, left);
    if (items[1].revents & ZMQ_POLLIN) {
      zmq::message_t ev, addr;
      (void)monitor.recv(ev);
      if (ev.more()) (void)monitor.recv(addr);
      uint16_t event = 0;
      if (ev.size() >= 2) std::memcpy(&event, ev.data(), 2);
      if (event == ZMQ_EVENT_CONNECTED) {
        tcp_connected = true;
        continue;
      }
      if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
        handshake_ok = true;
        continue;
      }
      if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
        throw Error(Errc::wrong_key,
                    "the controller at '" + o.controller + "' refused this operator key (is it listed in operator.authorized_keys?)");
      throw Error(Errc::io,
                  "CURVE handshake with '" + o.controller + "' failed (is 'controller-curve.pub' in the key dir the controller's key?)");
    }
    if (!(items[0].revents & ZMQ_POLLIN)) continue;
    zmq::message_t id, msg;
    (void)s.recv(id);
    if (!id.more()) continue;
    (void)s.recv(msg);
    while (msg.more()) {  // drop anything beyond two frames
      zmq::message_t extra;
      (void)s.recv(extra);
      if (!extra.more()) break;
    }
    if (id.to_string_view() != cairn::proto::kOperatorProtocolId) continue;
    cairn::v1::OperatorResponse resp;
    if (!resp.ParseFromArray(msg.data(), int(msg.size()))) continue;
    if (resp.request_id() != request.request_id()) continue;
    if (resp.code() != cairn::v1::ERROR_CODE_OK)
      throw Error(resp.code() == cairn::v1::ERROR_CODE_NOT_FOUND ? Errc::not_found : Errc::invalid_input,
                  proto::error_code_name(resp.code()) + ": " + resp.detail());
    return resp;
  }
}

void set_labels(const std::vector<std::string>& given, cairn::v1::Selector& selector) {
  if (given.empty()) return;
  selector.clear_labels();
  for (const auto& l : given) {
    auto eq = l.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == l.size())
      throw Error(Errc::invalid_input, "--label '" + l + "' must be NAME=VALUE");
    (*selector.mutable_labels())[l.substr(0, eq)] = l.substr(eq + 1);
  }
}

}  // namespace cairn::ctl
