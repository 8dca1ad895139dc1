// cairn-plan-forge: a test tool, never installed. It turns one signed plan
// envelope (stdin) into a bad one (stdout) the way an attacker or a broken
// controller could: a flipped signature byte, a foreign signer, a shifted
// validity window, another agent's key, an old sequence, an unknown type or a
// payload that does not parse. The integration tests put its output into the
// catalog in place of a real plan, so the real controller delivers it to a real
// agent, and check that the agent refuses it with the right reason.
//
//   cairn-plan-forge --fault NAME --signing-key FILE [--target-key Z85] [--sequence N] < in > out
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <ctime>
#include <iostream>
#include <iterator>
#include <string>

#include "common/crypto/crypto.h"
#include "common/plan/envelope.h"
#include "common/plan/signer.h"
#include "common/plan/signing_key.h"
#include "controller/keyfiles.h"
#include "proto/cairn.pb.h"
#include "proto/protocol.h"

using namespace cairn;

namespace {

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "cairn-plan-forge: %s\n", why.c_str());
  std::exit(2);
}

Bytes resign(const plan::SigningKey& key, const v1::PlanPayload& p) { return plan::sign_plan(key, p); }

}  // namespace

int main(int argc, char** argv) {
  std::string fault, key_file, target_z85;
  long long sequence = -1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value after " + a);
      return argv[++i];
    };
    if (a == "--fault")
      fault = next();
    else if (a == "--signing-key")
      key_file = next();
    else if (a == "--target-key")
      target_z85 = next();
    else if (a == "--sequence")
      sequence = std::stoll(next());
    else
      die("unknown argument '" + a + "'");
  }
  std::string in((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  v1::SignedEnvelope env;
  if (!env.ParseFromString(in)) die("stdin is not a SignedEnvelope");
  v1::PlanPayload p;
  if (!p.ParseFromString(env.payload())) die("the envelope's payload is not a PlanPayload");
  auto key = [&] {
    if (key_file.empty()) die("--signing-key is needed for fault '" + fault + "'");
    return plan::SigningKey::load(key_file);
  };
  const int64_t now = int64_t(std::time(nullptr));
  Bytes out;
  if (fault == "bad_signature") {
    std::string sig = env.signature();
    if (sig.empty()) die("the envelope has no signature");
    sig[sig.size() / 2] = char(sig[sig.size() / 2] ^ 0x01);
    env.set_signature(sig);
    std::string s = env.SerializeAsString();
    out.assign(s.begin(), s.end());
  } else if (fault == "missing_signature") {
    env.clear_signature();
    std::string s = env.SerializeAsString();
    out.assign(s.begin(), s.end());
  } else if (fault == "resign") {  // unchanged payload, signed by --signing-key (e.g. a retired key)
    out = resign(key(), p);
  } else if (fault == "unknown_key") {
    out = resign(plan::SigningKey::generate(), p);
  } else if (fault == "expired") {
    p.set_issued_at(now - 7200);
    p.set_not_before(now - 7200);
    p.set_expires_at(now - 3600);
    plan::set_random_nonce(p);
    out = resign(key(), p);
  } else if (fault == "not_yet_valid") {
    p.set_issued_at(now);
    p.set_not_before(now + 3600);
    p.set_expires_at(now + 7200);
    plan::set_random_nonce(p);
    out = resign(key(), p);
  } else if (fault == "wrong_target") {
    auto k = controller::z85_to_key(target_z85);
    if (!k) die("--target-key must be a Z85 CURVE public key");
    p.set_target_agent_key(std::string(k->begin(), k->end()));
    out = resign(key(), p);
  } else if (fault == "older_sequence") {
    if (sequence < 0) die("--sequence is needed for fault 'older_sequence'");
    p.set_sequence(uint64_t(sequence));
    plan::set_random_nonce(p);
    out = resign(key(), p);
  } else if (fault == "unknown_type") {
    std::string body = p.SerializeAsString();
    out = plan::sign_envelope(key(), "application/vnd.cairn.shell-command.v1+protobuf", as_bytes(body));
  } else if (fault == "malformed_payload") {
    Bytes junk(64);
    crypto::random_bytes(junk.data(), junk.size());
    out = plan::sign_envelope(key(), proto::kPlanPayloadType, junk);
  } else if (fault == "malformed_envelope") {
    out = Bytes(in.begin(), in.begin() + in.size() / 3);  // truncated mid-field
    out.push_back(0xff);
  } else {
    die("unknown fault '" + fault + "'");
  }
  if (::write(1, out.data(), out.size()) != ssize_t(out.size())) die("cannot write stdout");
  return 0;
}
