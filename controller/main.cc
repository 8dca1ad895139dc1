// cairn-controller: the catalog, the plan-signing key, the fleet socket and
// the operator API of one cluster. See docs/configuration.md and
// docs/protocol.md.
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>

#include <google/protobuf/stubs/logging.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include "cairn/version.h"
#include "controller/config.h"
#include "controller/server.h"

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

int usage() {
  std::fprintf(stderr, "usage: cairn-controller --config FILE [--check-config]\n       cairn-controller --version\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      config_path = a.substr(9);
    } else if (a == "--check-config") {
      check_only = true;
    } else if (a == "--version") {
      std::printf("cairn-controller %s\n", CAIRN_VERSION);
      return 0;
    } else {
      return usage();
    }
  }
  if (config_path.empty()) return usage();

  cairn::controller::ControllerConfig config;
  try {
    config = cairn::controller::load_config(config_path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cairn-controller: %s\n", e.what());
    return 2;
  }
  if (check_only) {
    std::printf("%s: ok\n", config_path.c_str());
    return 0;
  }
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  // libprotobuf logs every malformed string it parses; a peer sending garbage
  // must not be able to flood the log through it.
  google::protobuf::SetLogHandler([](google::protobuf::LogLevel level, const char*, int, const std::string& m) {
    if (level >= google::protobuf::LOGLEVEL_FATAL) spdlog::critical("protobuf: {}", m);
    else spdlog::debug("protobuf: {}", m);
  });

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  try {
    cairn::controller::Server server(config);
    sd_notify(0, "READY=1");
    server.run(g_stop, [] { sd_notify(0, "WATCHDOG=1"); });
    sd_notify(0, "STOPPING=1");
  } catch (const std::exception& e) {
    spdlog::critical("cairn-controller: {}", e.what());
    return 1;
  }
  return 0;
}
