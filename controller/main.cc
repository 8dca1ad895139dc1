// cairn-controller: the catalog, the plan-signing key, the fleet socket and
// the operator API of one cluster. See docs/configuration.md and
// docs/protocol.md.
#include <dlfcn.h>
#include <google/protobuf/stubs/logging.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>
#include <zmq.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "cairn/version.h"
#include "common/plan/signing_key.h"
#include "common/repo/storage/registry.h"
#include "common/util/fs.h"
#include "controller/config.h"
#include "controller/keyfiles.h"
#include "controller/server.h"

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

// Which libzmq this process loaded, and whether it is the controller's own
// (cmake/controller_libzmq.cmake: Debian's source with smaller pipe chunks,
// ~35 KB a long-lived agent connection where Debian's libzmq5 holds ~97 KB).
// `own` is false when it was built for one and loaded another (the file
// missing, LD_LIBRARY_PATH).
struct LoadedLibzmq {
  std::string line;
  bool own = true;
};
LoadedLibzmq loaded_libzmq() {
  int major = 0, minor = 0, patch = 0;
  zmq_version(&major, &minor, &patch);
  std::string path = "?";
  Dl_info info{};
  if (void* sym = dlsym(RTLD_DEFAULT, "zmq_version"); sym && dladdr(sym, &info) && info.dli_fname) {
    std::error_code ec;
    auto canonical = std::filesystem::canonical(info.dli_fname, ec);
    path = ec ? std::string(info.dli_fname) : canonical.string();
  }
  LoadedLibzmq l;
  l.line = "libzmq " + std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch) + " from " + path;
#if CAIRN_CONTROLLER_LIBZMQ_CHUNK > 0
  const std::string suffix = "/lib/cairn/libzmq.so.5";
  // Where its RUNPATH, $ORIGIN/../lib/cairn, finds it: installed and in the build tree alike.
  l.own = path.size() > suffix.size() && path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
  if (l.own)
    l.line += " (the controller's own: Debian's " CAIRN_CONTROLLER_LIBZMQ_FROM " source, " + std::to_string(CAIRN_CONTROLLER_LIBZMQ_CHUNK) +
              "-frame pipe chunks where Debian's libzmq5 has 256)";
  else
    l.line += " instead of the controller's own (Debian's " CAIRN_CONTROLLER_LIBZMQ_FROM " source with " +
              std::to_string(CAIRN_CONTROLLER_LIBZMQ_CHUNK) +
              "-frame pipe chunks, installed as lib/cairn/libzmq.so.5 beside bin/): each long-lived agent connection "
              "holds ~97 KB instead of ~35 KB (docs/scaling.md)";
#else
  l.line +=
      " (Debian's libzmq5 as it is, 256-frame pipe chunks: the build was told "
      "CAIRN_CONTROLLER_LIBZMQ_PIPE_CHUNK=0 or had no libzmq source; docs/scaling.md)";
#endif
  return l;
}

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
      std::printf("cairn-controller %s\n%s\n", CAIRN_VERSION, loaded_libzmq().line.c_str());
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
  // Every file start reads, read as start reads it (modes and contents): what
  // start would refuse, --check-config refuses, and both exit 2 for it, so
  // systemd's RestartPreventExitStatus=2 stops a restart loop (issue 32).
  try {
    using namespace cairn::controller;
    (void)read_curve_secret(config.key_dir + "/" + kCurveSecretFile);
    (void)read_curve_public(config.key_dir + "/" + kCurvePublicFile);
    (void)cairn::plan::SigningKey::load(config.key_dir + "/" + kSigningKeyFile);
    for (const auto& [name, file] : config.operator_key_files) (void)read_curve_public(file);
    if (!config.http_token_file.empty()) (void)cairn::read_secret_file(config.http_token_file);
    if (!config.audit_kafka.sasl_password_file.empty()) (void)cairn::read_secret_file(config.audit_kafka.sasl_password_file);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cairn-controller: %s: %s\n", config_path.c_str(), e.what());
    return 2;
  }
  if (check_only) {
    std::printf("%s: ok\n", config_path.c_str());
    return 0;
  }
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  cairn::repo::set_storage_log([](const std::string& m) { spdlog::warn("storage: {}", m); });
  if (auto z = loaded_libzmq(); z.own)
    spdlog::info("cairn-controller {}: {}", CAIRN_VERSION, z.line);
  else
    spdlog::warn("cairn-controller {}: {}", CAIRN_VERSION, z.line);
  // libprotobuf logs every malformed string it parses; a peer sending garbage
  // must not be able to flood the log through it.
  google::protobuf::SetLogHandler([](google::protobuf::LogLevel level, const char*, int, const std::string& m) {
    if (level >= google::protobuf::LOGLEVEL_FATAL)
      spdlog::critical("protobuf: {}", m);
    else
      spdlog::debug("protobuf: {}", m);
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
