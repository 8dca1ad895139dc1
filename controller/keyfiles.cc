// Key files: creation with safe modes, and strict reading.
#include "controller/keyfiles.h"

#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <cstring>

#include "common/plan/signing_key.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::controller {
namespace {

std::string trim(std::string s) {
  const char* ws = " \t\r\n";
  s.erase(0, s.find_first_not_of(ws));
  auto end = s.find_last_not_of(ws);
  s.erase(end == std::string::npos ? 0 : end + 1);
  return s;
}

bool path_taken(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

}  // namespace

std::optional<CurveKey> z85_to_key(std::string_view z85) {
  if (z85.size() != 40) return std::nullopt;
  std::string s(z85);
  CurveKey k{};
  if (!zmq_z85_decode(k.data(), s.c_str())) return std::nullopt;
  return k;
}

std::string key_to_z85(const CurveKey& key) {
  char out[41] = {};
  zmq_z85_encode(out, key.data(), key.size());
  return out;
}

CurveKeypair generate_curve_keypair() {
  char pub[41] = {}, sec[41] = {};
  if (zmq_curve_keypair(pub, sec) != 0)
    throw Error(Errc::unsupported, "cannot create a CURVE keypair: libzmq was built without CURVE support");
  CurveKeypair kp{pub, sec};
  // The stack copy of the secret is not left behind for a later dump.
  explicit_bzero(sec, sizeof sec);
  return kp;
}

std::string read_curve_public(const std::string& path) {
  Bytes b = read_file(path, kMaxSecretFile);
  std::string s = trim(std::string(b.begin(), b.end()));
  if (!z85_to_key(s)) throw Error(Errc::invalid_input, "'" + path + "' is not a CURVE public key (40 Z85 characters)");
  return s;
}

std::string read_curve_secret(const std::string& path) {
  std::string s = trim(read_secret_file(path));
  if (!z85_to_key(s)) throw Error(Errc::invalid_input, "'" + path + "' is not a CURVE secret key (40 Z85 characters)");
  return s;
}

InitializedKeys init_keys(const std::string& dir) {
  mkdir_p(dir, 0700);
  for (const char* f : {kSigningKeyFile, kSigningPubFile, kCurveSecretFile, kCurvePublicFile, kOperatorSecretFile, kOperatorPublicFile}) {
    std::string p = dir + "/" + f;
    if (path_taken(p)) throw Error(Errc::exists, "'" + p + "' exists; keys are never replaced (move it away first)");
  }
  InitializedKeys out;
  auto signing = plan::SigningKey::generate();
  signing.save(dir + "/" + kSigningKeyFile);
  out.signing_public = plan::format_public_key(signing.public_key());
  out.signing_key_id = signing.key_id();
  write_file_atomic(dir + "/" + kSigningPubFile, as_bytes(out.signing_public + "\n"), 0644);

  auto ctl = generate_curve_keypair();
  write_file_atomic(dir + "/" + kCurveSecretFile, as_bytes(ctl.secret_z85 + "\n"), 0600);
  write_file_atomic(dir + "/" + kCurvePublicFile, as_bytes(ctl.public_z85 + "\n"), 0644);
  out.controller_curve = ctl.public_z85;

  auto op = generate_curve_keypair();
  write_file_atomic(dir + "/" + kOperatorSecretFile, as_bytes(op.secret_z85 + "\n"), 0600);
  write_file_atomic(dir + "/" + kOperatorPublicFile, as_bytes(op.public_z85 + "\n"), 0644);
  out.operator_curve = op.public_z85;
  return out;
}

}  // namespace cairn::controller
