// OperatorRequest through the operator API (OperatorApi::handle, after the
// frame check the server does), against a controller with two approved agents,
// a backup set and plans (controller_fixture.h), as the operator 'admin'.
//
// Input: first byte 'B': the rest is one request body as it arrives on the
// wire. Otherwise protobuf text format: requests separated by lines "===",
// placeholders (@S@, @A1@, @T2@, ...) as in controller_fixture.h.
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/text_format.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "controller/wire.h"
#include "controller_fixture.h"

using namespace cairn;

namespace {

void request(fuzz::ControllerFixture& f, const std::string& body) {
  auto parsed = controller::parse_operator_request({std::string(proto::kOperatorProtocolId), body});
  if (!parsed.ok()) return;
  auto resp = f.api->handle("operator:admin", parsed.message);
  (void)controller::operator_frames(resp);
  f.fleet->tick();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  google::protobuf::SetLogHandler(nullptr);  // text-format and UTF-8 refusals are expected by the thousand
  std::string_view in(reinterpret_cast<const char*>(data), size);
  fuzz::ControllerFixture f;
  f.register_agent(0);
  if (!in.empty() && in[0] == 'B') {
    request(f, std::string(in.substr(1)));
    return 0;
  }
  google::protobuf::TextFormat::Parser parser;
  parser.AllowPartialMessage(true);
  std::string text = f.substitute(std::string(in));
  size_t at = 0;
  for (int n = 0; n < 32 && at <= text.size(); ++n) {
    size_t end = text.find("\n===", at);
    std::string one = text.substr(at, end == std::string::npos ? std::string::npos : end - at);
    at = end == std::string::npos ? text.size() + 1 : end + 4;
    cairn::v1::OperatorRequest q;
    if (!parser.ParseFromString(one, &q)) continue;
    request(f, q.SerializePartialAsString());
  }
  return 0;
}
