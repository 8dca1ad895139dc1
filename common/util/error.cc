#include "common/util/error.h"

#include <cerrno>
#include <cstring>
#include <string>

namespace cairn {

std::string_view errc_name(Errc c) {
  switch (c) {
    case Errc::ok:
      return "ok";
    case Errc::io:
      return "io";
    case Errc::not_found:
      return "not_found";
    case Errc::corrupt:
      return "corrupt";
    case Errc::wrong_key:
      return "wrong_key";
    case Errc::locked:
      return "locked";
    case Errc::no_repo:
      return "no_repo";
    case Errc::no_space:
      return "no_space";
    case Errc::invalid_input:
      return "invalid_input";
    case Errc::unsupported:
      return "unsupported";
    case Errc::exists:
      return "exists";
    case Errc::interrupted:
      return "interrupted";
    case Errc::denied:
      return "denied";
    case Errc::unavailable:
      return "unavailable";
  }
  return "unknown";
}

void throw_errno(std::string_view op, std::string_view path, int err) {
  std::string msg = std::string(op) + " '" + std::string(path) + "': " + std::strerror(err);
  Errc code = Errc::io;
  if (err == ENOSPC || err == EDQUOT) {
    code = Errc::no_space;
    // The path names the file system: a restore target, a staging directory
    // or the repository, whichever this was (issue 32).
    msg += " (its file system is full: free space on the disk that holds '" + std::string(path) + "', then run the command again)";
  } else if (err == ENOENT) {
    code = Errc::not_found;
  } else if (err == EEXIST) {
    code = Errc::exists;
  }
  throw Error(code, msg, err);
}

}  // namespace cairn
