#pragma once
// Shared pieces of the agent tests: a temp dir that cleans up, and a valid
// configuration around it (password file 0600, signing keys file, a
// repository and a files component).
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace cairn::agent::test {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "cairn-agent-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string path() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// A loopback port for a real server the test starts, reserved for this
// process's lifetime. Taken below the kernel's ephemeral range (so no
// outgoing connection and no bind(0) elsewhere is handed it) and locked with
// flock on /tmp/cairn-test-ports/<port>, so two tests running in parallel
// (ctest -j, pytest: tests/integration/ports.py uses the same files) never
// pick the same one. A bind-and-release port from the ephemeral range could be
// handed to another process before the server bound it (CI saw a test hang
// talking to whatever held it). Falls back to that when the range is unusable.
inline int free_port() {
  auto bindable = [](int port) {
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    bool ok = ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(s);
    return ok;
  };
  int lo = 32768;
  if (std::ifstream f("/proc/sys/net/ipv4/ip_local_port_range"); f) f >> lo;
  const int first = 15000, last = lo - 1;
  const std::string dir = "/tmp/cairn-test-ports";
  ::mkdir(dir.c_str(), 01777);
  if (last - first >= 1000) {
    static unsigned seed = static_cast<unsigned>(::getpid()) * 2654435761u ^ static_cast<unsigned>(::time(nullptr));
    for (int i = 0; i < 4000; ++i) {
      seed = seed * 1103515245u + 12345u;
      int port = first + static_cast<int>((seed >> 8) % static_cast<unsigned>(last - first + 1));
      std::string lock = dir + "/" + std::to_string(port);
      int fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
      if (fd < 0) break;
      if (::flock(fd, LOCK_EX | LOCK_NB) != 0 || !bindable(port)) {
        ::close(fd);
        continue;
      }
      return port;  // fd stays open (and locked) until the process exits
    }
  }
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) throw std::runtime_error("socket failed");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  bool ok = ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(s);
  if (!ok) throw std::runtime_error("no free loopback port");
  return ntohs(a.sin_port);
}

inline void write_text(const std::string& path, const std::string& text, int mode = 0644) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
  ::chmod(path.c_str(), mode);
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A Z85 CURVE public key (any 40 valid characters decode).
inline constexpr const char* kControllerKey = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";

// Writes password and signing-key files under dir; returns config text whose
// [[component]] 'data' declares dir/data and restores to dir/alt.
inline std::string base_config(const TempDir& dir, const std::string& signing_key_line = "") {
  write_text(dir.file("repo.pass"), "correct horse\n", 0600);
  write_text(dir.file("signing.pub"), "# controller keys\n" + signing_key_line + "\n");
  return "name = \"node-1\"\n"
         "state_dir = \"" +
         dir.file("state") +
         "\"\n"
         "\n"
         "[controller]\n"
         "endpoint = \"tcp://127.0.0.1:7600\"\n"
         "public_key = \"" +
         std::string(kControllerKey) +
         "\"\n"
         "signing_keys_file = \"" +
         dir.file("signing.pub") +
         "\"\n"
         "\n"
         "[[repository]]\n"
         "name = \"main\"\n"
         "path = \"" +
         dir.file("repo") +
         "\"\n"
         "password_file = \"" +
         dir.file("repo.pass") +
         "\"\n"
         "\n"
         "[[component]]\n"
         "name = \"data\"\n"
         "driver = \"files\"\n"
         "paths = [\"" +
         dir.file("data") +
         "\"]\n"
         "restore_to = \"" +
         dir.file("alt") + "\"\n";
}

}  // namespace cairn::agent::test
