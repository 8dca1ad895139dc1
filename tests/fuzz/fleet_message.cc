// AgentMessage through the controller's fleet handler (Fleet::on_frames, what
// on_message() calls once ZMQ and the ZAP handler named the sender), with
// two registered, approved agents that each have a task and a plan
// (controller_fixture.h).
//
// Input: first byte 'B': the rest is one message body as it arrives on the
// wire, from node-1. Otherwise the input is protobuf text format: messages
// separated by lines "===", each optionally starting with a line "from 2"
// (node-2) or "from 3" (an unknown key), placeholders (@T1@, @P2@, ...) as in
// controller_fixture.h. tick() runs after every message.
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/text_format.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "controller/wire.h"
#include "controller_fixture.h"

using namespace cairn;

namespace {

void deliver(fuzz::ControllerFixture& f, int from, const std::string& body) {
  f.fleet->on_frames("r" + std::to_string(from), fuzz::agent_key(uint8_t(from + 1)), -1, {std::string(proto::kFleetProtocolId), body});
  f.fleet->tick();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  google::protobuf::SetLogHandler(nullptr);  // text-format and UTF-8 refusals are expected by the thousand
  std::string_view in(reinterpret_cast<const char*>(data), size);
  fuzz::ControllerFixture f;
  f.register_agent(0);
  f.register_agent(1);
  if (!in.empty() && in[0] == 'B') {
    deliver(f, 0, std::string(in.substr(1)));
    return 0;
  }
  google::protobuf::TextFormat::Parser parser;
  parser.AllowPartialMessage(true);
  std::string text = f.substitute(std::string(in));
  size_t at = 0;
  for (int n = 0; n < 64 && at <= text.size(); ++n) {
    size_t end = text.find("\n===", at);
    std::string one = text.substr(at, end == std::string::npos ? std::string::npos : end - at);
    at = end == std::string::npos ? text.size() + 1 : end + 4;
    int from = 0;
    if (one.rfind("from ", 0) == 0 || one.rfind("\nfrom ", 0) == 0) {
      size_t p = one.find("from ") + 5;
      from = one.size() > p && one[p] >= '1' && one[p] <= '3' ? one[p] - '1' : 0;
      size_t nl = one.find('\n', p);
      one = nl == std::string::npos ? "" : one.substr(nl + 1);
    }
    cairn::v1::AgentMessage m;
    if (!parser.ParseFromString(one, &m)) continue;
    deliver(f, from, m.SerializePartialAsString());
  }
  return 0;
}
