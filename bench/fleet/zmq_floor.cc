// cairn-bench-zmq-floor: what libzmq itself keeps resident per connection on
// the side that accepts them, with nothing of cairn's in the process: the
// floor under the controller's memory at N agents (docs/benchmarks.md § Fleet).
//
// A ROUTER bound with CURVE (and, with --zap, a ZAP handler thread that
// accepts every key, as the controller's authenticates them) in this process;
// N DEALERs with their own CURVE keys in child processes (4,000 each). Every round, each
// DEALER sends one message and the ROUTER answers it. Prints one JSON line:
// this process's RSS once bound, after the first message each way (fresh
// connections) and after --rounds messages each way (long-lived ones; libzmq's
// pipes use chunks of 256 frames and keep a spare: memory settles after ~500
// frames each way).
//
//   cairn-bench-zmq-floor [--connections N] [--rounds N] [--bytes N] [--frames N] [--io-threads N] [--zap] [--batch-size N]
#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

namespace {

double rss_mb() {
  std::ifstream f("/proc/self/statm");
  long total = 0, resident = 0;
  f >> total >> resident;
  return double(resident) * double(sysconf(_SC_PAGESIZE)) / 1e6;
}

// Resident MB by kind of mapping, from /proc/self/smaps: the main thread's
// heap ([heap]), anonymous mappings (the I/O threads' malloc arenas, stacks)
// and file-backed ones (libraries).
nlohmann::json rss_by_mapping() {
  std::ifstream f("/proc/self/smaps");
  std::string line, kind = "anonymous";
  double heap = 0, anonymous = 0, files = 0;
  while (std::getline(f, line)) {
    if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) && line.find('-') < line.find(' ')) {
      auto slash = line.find('/'), bracket = line.find('[');
      kind = line.find("[heap]") != std::string::npos ? "heap"
             : slash != std::string::npos             ? "file"
             : bracket != std::string::npos           ? "other"
                                                      : "anonymous";
    } else if (line.rfind("Rss:", 0) == 0) {
      double mb = std::stod(line.substr(4)) / 1000;
      (kind == "heap" ? heap : kind == "file" ? files : anonymous) += mb;
    }
  }
  return {{"heap", heap}, {"anonymous", anonymous}, {"files", files}};
}

std::pair<std::string, std::string> keypair() {
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0) throw std::runtime_error("zmq_curve_keypair failed (libzmq without CURVE?)");
  return {pub, sec};
}

// The child: n DEALERs, one message each per round, then every answer.
[[noreturn]] void run_dealers(const std::string& endpoint, const std::string& server_key, int n, int rounds, size_t bytes, int frames) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  try {
    zmq::context_t ctx(2);
    ctx.set(zmq::ctxopt::max_sockets, n + 16);
    std::vector<zmq::socket_t> s;
    s.reserve(size_t(n));
    for (int i = 0; i < n; ++i) {
      auto [pub, sec] = keypair();
      s.emplace_back(ctx, zmq::socket_type::dealer);
      s.back().set(zmq::sockopt::curve_serverkey, server_key);
      s.back().set(zmq::sockopt::curve_publickey, pub);
      s.back().set(zmq::sockopt::curve_secretkey, sec);
      s.back().set(zmq::sockopt::linger, 0);
      s.back().set(zmq::sockopt::rcvtimeo, 120000);
      s.back().connect(endpoint);
      // In waves, as agents come: 10,000 handshakes at once overflow the
      // listen backlog and the kernel's SYN retries stretch the first round.
      if ((i + 1) % 500 == 0) usleep(100000);
    }
    std::string body(bytes, 'a');
    for (int r = 0; r < rounds; ++r) {
      for (auto& d : s)
        for (int f = 0; f < frames; ++f) d.send(zmq::buffer(body), f + 1 < frames ? zmq::send_flags::sndmore : zmq::send_flags::none);
      for (auto& d : s) {
        for (int f = 0; f < frames; ++f) {
          zmq::message_t m;
          if (!d.recv(m)) {
            std::fprintf(stderr, "zmq floor: no answer within 120 s in round %d\n", r);
            std::_Exit(1);
          }
        }
      }
    }
    pause();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "zmq floor (dealers): %s\n", e.what());
  }
  std::_Exit(1);
}

// Which libzmq.so this process loaded (Debian's, or the controller's own,
// build/lib/cairn, through LD_LIBRARY_PATH).
std::string libzmq_path() {
  std::ifstream f("/proc/self/maps");
  std::string line;
  while (std::getline(f, line))
    if (auto at = line.find('/'); at != std::string::npos && line.find("libzmq.so", at) != std::string::npos) return line.substr(at);
  return "";
}

std::string zmq_version_string() {
  int major = 0, minor = 0, patch = 0;
  zmq_version(&major, &minor, &patch);
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"libzmq's resident memory per CURVE connection on the accepting side"};
  int n = 1000, rounds = 300, io_threads = 2, frames = 1;
  size_t bytes = 100;
  bool zap = false;
  int batch_size = 0;
  app.add_option("--connections", n)->capture_default_str()->check(CLI::Range(1, 60000));
  app.add_option("--rounds", rounds, "messages each way per connection")->capture_default_str()->check(CLI::Range(1, 100000));
  app.add_option("--bytes", bytes, "size of each frame")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--frames", frames, "frames a message (cairn's fleet messages have 2: header and body)")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--io-threads", io_threads)->capture_default_str()->check(CLI::Range(1, 64));
  app.add_flag("--zap", zap, "authenticate with a ZAP handler (accepts all), as the controller does");
  app.add_option("--batch-size", batch_size,
                 "the ROUTER's ZMQ_IN_BATCH_SIZE and ZMQ_OUT_BATCH_SIZE (DRAFT options, 8192 by default: the "
                 "decoder's and encoder's buffers; Debian's libzmq is built without them)")
      ->check(CLI::Range(64, 1 << 20));
  CLI11_PARSE(app, argc, argv);

  auto [server_pub, server_sec] = keypair();
  zmq::context_t ctx(io_threads);
  // Whether this libzmq has the DRAFT batch-size options, reported either way.
  constexpr int in_batch_size = 101, out_batch_size = 102;  // zmq.h, under ZMQ_BUILD_DRAFT_API
  int probe = 0;
  bool batch_options = false;
  {
    zmq::socket_t s(ctx, zmq::socket_type::router);
    size_t probe_len = sizeof probe;
    batch_options = zmq_getsockopt(s.handle(), in_batch_size, &probe, &probe_len) == 0;
  }
  if (batch_size > 0 && !batch_options) {
    std::fprintf(stderr, "zmq floor: --batch-size needs a libzmq built with its DRAFT API; this one (%s) is not\n",
                 zmq_version_string().c_str());
    return 2;
  }
  ctx.set(zmq::ctxopt::max_sockets, 1024);
  std::thread zap_thread;
  zmq::socket_t zap_socket;
  if (zap) {
    zap_socket = zmq::socket_t(ctx, zmq::socket_type::rep);
    zap_socket.set(zmq::sockopt::linger, 0);
    zap_socket.bind("inproc://zeromq.zap.01");
    zap_thread = std::thread([&] {
      try {
        for (;;) {
          std::vector<zmq::message_t> req;
          do {
            zmq::message_t m;
            (void)zap_socket.recv(m);
            req.push_back(std::move(m));
          } while (zap_socket.get(zmq::sockopt::rcvmore));
          if (req.size() < 2) continue;
          zap_socket.send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
          zap_socket.send(req[1], zmq::send_flags::sndmore);  // request id
          zap_socket.send(zmq::str_buffer("200"), zmq::send_flags::sndmore);
          zap_socket.send(zmq::str_buffer("OK"), zmq::send_flags::sndmore);
          zap_socket.send(zmq::str_buffer("peer"), zmq::send_flags::sndmore);
          zap_socket.send(zmq::str_buffer(""), zmq::send_flags::none);
        }
      } catch (const zmq::error_t&) {  // context terminated
      }
    });
  }
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.set(zmq::sockopt::curve_server, 1);
  router.set(zmq::sockopt::curve_secretkey, server_sec);
  if (zap) router.set(zmq::sockopt::zap_domain, "floor");
  router.set(zmq::sockopt::backlog, 4096);
  router.set(zmq::sockopt::router_mandatory, 1);
  if (batch_size > 0 && (zmq_setsockopt(router.handle(), in_batch_size, &batch_size, sizeof batch_size) != 0 ||
                         zmq_setsockopt(router.handle(), out_batch_size, &batch_size, sizeof batch_size) != 0))
    throw zmq::error_t();
  router.bind("tcp://127.0.0.1:*");
  std::string endpoint = router.get(zmq::sockopt::last_endpoint);
  double bound = rss_mb();

  // Each DEALER socket holds two descriptors (its TCP connection and its
  // mailbox's eventfd): at most 4,000 a process keeps them under the usual
  // 20,000-descriptor limit.
  std::vector<pid_t> children;
  std::fflush(nullptr);
  for (int first = 0; first < n; first += 4000) {
    pid_t child = fork();
    if (child < 0) throw std::runtime_error("fork failed");
    if (child == 0) run_dealers(endpoint, server_pub, std::min(4000, n - first), rounds, bytes, frames);
    children.push_back(child);
  }
  std::string body(bytes, 'b');
  double fresh = 0;
  int status = 0;
  for (int r = 0; r < rounds; ++r) {
    for (int i = 0; i < n; ++i) {
      zmq::message_t id, m;
      while (!router.recv(id, zmq::recv_flags::dontwait)) {
        for (pid_t child : children)
          if (waitpid(child, &status, WNOHANG) == child) {
            std::fprintf(stderr, "zmq floor: a dealers' process ended in round %d\n", r);
            for (pid_t c : children) kill(c, SIGKILL);
            std::_Exit(1);
          }
        zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
        zmq::poll(&item, 1, std::chrono::milliseconds(200));
      }
      do (void)router.recv(m);
      while (m.more());
      router.send(id, zmq::send_flags::sndmore);
      for (int f = 0; f < frames; ++f) router.send(zmq::buffer(body), f + 1 < frames ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
    if (r == 0) fresh = rss_mb();
  }
  double after = rss_mb();
  // What glibc still holds of it that is free (the controller trims every 30 s).
  malloc_trim(0);
  double trimmed = rss_mb();
  for (pid_t child : children) {
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
  }

  nlohmann::json j = {{"connections", n},
                      {"rounds", rounds},
                      {"bytes", bytes},
                      {"frames", frames},
                      {"io_threads", io_threads},
                      {"zap", zap},
                      {"libzmq", zmq_version_string()},
                      {"libzmq_path", libzmq_path()},
                      {"batch_size_options", batch_options},
                      {"batch_size", batch_options ? (batch_size > 0 ? batch_size : probe) : 8192},
                      {"rss_mb_bound", bound},
                      {"rss_mb_fresh", fresh},
                      {"rss_mb_long_lived", after},
                      {"kb_per_connection_fresh", (fresh - bound) * 1000 / n},
                      {"kb_per_connection_long_lived", (after - bound) * 1000 / n},
                      {"rss_mb_long_lived_trimmed", trimmed},
                      {"rss_mb_long_lived_by_mapping", rss_by_mapping()}};
  std::printf("%s\n", j.dump().c_str());
  router.close();
  ctx.shutdown();
  if (zap_thread.joinable()) zap_thread.join();
  return 0;
}
