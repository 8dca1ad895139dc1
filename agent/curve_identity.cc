#include "agent/curve_identity.h"

#include <sys/stat.h>
#include <zmq.h>

#include <cerrno>

#include "agent/config.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent {

namespace {
std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}
}  // namespace

CurveIdentity load_or_create_identity(const std::string& dir, bool* created) {
  const std::string secret_path = dir + "/agent.key";
  const std::string public_path = dir + "/agent.pub";
  CurveIdentity id;
  struct stat st {};
  if (::stat(secret_path.c_str(), &st) == 0) {
    std::string why = check_secret_file_mode(secret_path);
    if (!why.empty()) throw Error(Errc::invalid_input, "agent key: " + why);
    Bytes b = read_file(secret_path, kMaxSecretFile);
    id.secret_z85 = trim(std::string(b.begin(), b.end()));
    char pub[41] = {};
    if (id.secret_z85.size() != 40 || zmq_curve_public(pub, id.secret_z85.c_str()) != 0)
      throw Error(Errc::corrupt, "agent key '" + secret_path + "' is not a Z85 CURVE secret key; move it away to create a new one");
    id.public_z85 = pub;
    if (created) *created = false;
  } else {
    if (errno != ENOENT) throw_errno("cannot inspect agent key", secret_path, errno);
    mkdir_p(dir, 0700);
    ::chmod(dir.c_str(), 0700);
    char pub[41] = {}, sec[41] = {};
    if (zmq_curve_keypair(pub, sec) != 0) throw Error(Errc::unsupported, "libzmq was built without CURVE support");
    id.public_z85 = pub;
    id.secret_z85 = sec;
    std::string s = id.secret_z85 + "\n";
    write_file_atomic(secret_path, as_bytes(s), 0600);
    if (created) *created = true;
  }
  // The public half is for operators (enrolment) and is rewritten every start.
  std::string p = id.public_z85 + "\n";
  write_file_atomic(public_path, as_bytes(p), 0644);
  zmq_z85_decode(id.public_raw.data(), id.public_z85.c_str());
  return id;
}

}  // namespace cairn::agent
