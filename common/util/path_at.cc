#include "common/util/path_at.h"

#include <fcntl.h>

namespace cairn {

int PathAt::fd() const { return dir ? dir.get() : AT_FDCWD; }
std::string PathAt::proc() const { return dir ? "/proc/self/fd/" + std::to_string(dir.get()) + "/" + rest : rest; }

PathAt path_at(const std::string& path) {
  constexpr size_t kPart = 2048;  // well below PATH_MAX, so the /proc form fits too
  PathAt p;
  size_t pos = 0;
  while (path.size() - pos >= kPart) {
    size_t cut = path.rfind('/', pos + kPart);
    if (cut == std::string::npos || cut <= pos) break;  // one name longer than a part: the call says what is wrong
    std::string part = path.substr(pos, cut - pos);
    int fd = ::openat(p.fd(), part.empty() ? "/" : part.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) break;  // the call on the rest fails and names why
    p.dir = Fd(fd);
    pos = cut + 1;
  }
  p.rest = path.substr(pos);
  return p;
}

}  // namespace cairn
