// ControllerMessage through the agent (Session::handle: frame decoding, then
// register replies, plans through the plan gate and task admission, key
// announcements, errors), with a real configuration, identity, replay journal
// and trust store in a fresh temp directory.
//
// Input, by first byte: 'B' the rest is one message body as it arrives on the
// wire. 'P' the rest is a PlanPayload in protobuf text format, signed with the
// controller key the agent trusts (target, validity window and nonce filled in
// when absent), so task admission is reached. 'K' the same for a
// KeyAnnouncement. Otherwise a ControllerMessage in text format.
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/text_format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "agent/config.h"
#include "agent/curve_identity.h"
#include "agent/plan_gate.h"
#include "agent/session.h"
#include "agent/task_runner.h"
#include "common/plan/envelope.h"
#include "common/plan/signing_key.h"
#include "proto/protocol.h"

using namespace cairn;
namespace fs = std::filesystem;

namespace {

struct Dir {
  std::string path;
  Dir() {
    const char* root = std::getenv("CAIRN_FUZZ_TMPDIR");
    std::string tmpl = std::string(root && *root ? root : fs::is_directory("/dev/shm") ? "/dev/shm" : "/tmp") + "/cairn-fuzz-agent-XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~Dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return path + "/" + name; }
  void write(const std::string& name, const std::string& text, int mode) const {
    fs::create_directories(fs::path(file(name)).parent_path());
    std::ofstream(file(name), std::ios::binary | std::ios::trunc) << text;
    ::chmod(file(name).c_str(), mode);
  }
};

const plan::SigningKey& controller_key() {
  static const plan::SigningKey key = plan::SigningKey::from_seed(std::array<uint8_t, 32>{9});
  return key;
}

std::string config_text(const Dir& d) {
  d.write("repo.pass", "correct horse\n", 0600);
  d.write("signing.pub", plan::format_public_key(controller_key().public_key()) + "\n", 0644);
  fs::create_directories(d.file("data"));
  return "name = \"node-1\"\n"
         "state_dir = \"" +
         d.file("state") +
         "\"\n"
         "[controller]\n"
         "endpoint = \"tcp://127.0.0.1:7600\"\n"
         "public_key = \"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\"\n"
         "signing_keys_file = \"" +
         d.file("signing.pub") +
         "\"\n"
         "[[repository]]\n"
         "name = \"main\"\n"
         "path = \"" +
         d.file("repo") +
         "\"\n"
         "password_file = \"" +
         d.file("repo.pass") +
         "\"\n"
         "[[component]]\n"
         "name = \"data\"\n"
         "driver = \"files\"\n"
         "paths = [\"" +
         d.file("data") +
         "\"]\n"
         "restore_to = \"" +
         d.file("alt") + "\"\n";
}

std::string wrap(const v1::ControllerMessage& m) { return m.SerializePartialAsString(); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  google::protobuf::SetLogHandler(nullptr);  // text-format and UTF-8 refusals are expected by the thousand
  if (size == 0) return 0;
  spdlog::set_level(spdlog::level::off);
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  Dir d;
  agent::AgentConfig config = agent::parse_config(config_text(d), "agent.toml");
  agent::CurveIdentity me = agent::load_or_create_identity(config.key_dir);
  int64_t now = std::time(nullptr);
  agent::PlanGate gate(config.replay_journal, config.trust_store, agent::load_signing_keys(config.signing_keys_file), me.public_raw, now);
  agent::TaskRunner runner(nullptr);
  agent::Session session(config, me, gate, runner);
  std::string id(proto::kFleetProtocolId);

  google::protobuf::TextFormat::Parser parser;
  parser.AllowPartialMessage(true);
  std::string body;
  switch (data[0]) {
    case 'B':
      body = std::string(in);
      break;
    case 'P': {
      v1::PlanPayload p;
      if (!parser.ParseFromString(std::string(in), &p)) return 0;
      if (p.target_agent_key().empty()) p.set_target_agent_key(me.public_raw.data(), me.public_raw.size());
      if (p.not_before() == 0 && p.expires_at() == 0) {
        p.set_issued_at(now - 10);
        p.set_not_before(now - 10);
        p.set_expires_at(now + 600);
      }
      if (p.nonce().empty()) p.set_nonce(std::string(16, 'n'));
      std::string payload = p.SerializePartialAsString();
      Bytes env = plan::sign_envelope(controller_key(), proto::kPlanPayloadType, as_bytes(payload));
      v1::ControllerMessage m;
      m.set_plan(std::string(env.begin(), env.end()));
      body = wrap(m);
      break;
    }
    case 'K': {
      v1::KeyAnnouncement a;
      if (!parser.ParseFromString(std::string(in), &a)) return 0;
      std::string payload = a.SerializePartialAsString();
      Bytes env = plan::sign_envelope(controller_key(), proto::kKeyAnnouncementPayloadType, as_bytes(payload));
      v1::ControllerMessage m;
      m.set_key_announcement(std::string(env.begin(), env.end()));
      body = wrap(m);
      break;
    }
    default: {
      v1::ControllerMessage m;
      if (!parser.ParseFromString(std::string(reinterpret_cast<const char*>(data), size), &m)) return 0;
      body = wrap(m);
    }
  }
  session.handle({id, body});
  return 0;
}
