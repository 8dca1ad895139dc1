#pragma once
// Shared pieces of cairnctl: global repository options, secrets, exit codes and
// progress output. Each command lives in its own file and registers itself in main.cc.
#include <CLI/CLI.hpp>
#include <atomic>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/repo/lock.h"
#include "common/repo/memory.h"
#include "common/repo/progress.h"
#include "common/repo/repository.h"
#include "common/util/error.h"

namespace cairn::ctl {

// Documented in docs/cli.md; scripts rely on them.
enum Exit : int {
  kExitOk = 0,
  kExitError = 1,
  kExitPartial = 3,  // snapshot written, some sources unreadable
  kExitNoRepo = 10,
  kExitLocked = 11,
  kExitWrongKey = 12,
  kExitDamaged = 13,      // an object of the repository failed verification (named in the message)
  kExitDenied = 14,       // the repository's store refused the credentials or the operation
  kExitUnavailable = 15,  // the repository's store did not answer (network, 5xx) after every retry
};

struct RepoOptions {
  std::string repo;
  std::string password_file;
  std::string key_file;
  bool json = false;
  bool quiet = false;
  std::string retry_lock;           // duration
  std::string storage_credentials;  // a remote repository's credentials file (mode 0600)
  bool no_cache = false;            // a remote repository: read everything from the store
};

// The command to run once parsing has succeeded.
using Action = std::function<int()>;

struct Context {
  RepoOptions opts;
  Action action;
  std::atomic<bool> cancel{false};
};

// Adds --repo, --password-file, --key-file, --json, --quiet, --retry-lock to a command.
void add_repo_options(CLI::App* cmd, RepoOptions& o);
// --memory-budget SIZE (backup, restore, check): what their buffers may hold
// (common/repo/memory.h). memory_budget() gives the budget in force: the
// option, else half the cgroup memory limit, else 512 MiB; throws
// invalid_input for a bad size. say_memory_budget() says it on stderr once the
// repository is open, when the option or a cgroup chose it (not with --quiet
// or --json).
// `least`: the smallest budget the command takes at all (backup and restore:
// kMinMemoryBudget; check and ls: kOpenBytes), `why` says what it is.
void add_memory_budget_option(CLI::App* cmd, std::string& value);
repo::MemoryBudget memory_budget(const std::string& value, uint64_t least = repo::kMinMemoryBudget,
                                 const char* why = "one thread's buffers and the packs in flight");
void say_memory_budget(const RepoOptions& o, const repo::MemoryBudget& b);
// Once the index is loaded: a budget the option gave below what the command
// needs of this repository (repo::repository_needs) is refused
// (invalid_input, exit 1); one a cgroup limit gave gets a warning (the other
// half of the limit is room for it); the default is not questioned.
void check_memory_needs(const repo::MemoryBudget& b, const std::string& value, const repo::RepositoryNeeds& n);
repo::Secret read_secret(const RepoOptions& o, const char* file_opt = "--password-file", const std::string& file_override = {});
std::unique_ptr<repo::Backend> make_backend(const RepoOptions& o);
// A remote repository's requests and retries, for results: JSON and one line of text.
nlohmann::json storage_json(const repo::Backend& be);
std::string storage_line(const repo::Backend& be);
// Opens the repository, loads the index; prints index problems as warnings.
std::unique_ptr<repo::Repository> open_repo(const RepoOptions& o, bool load_index = true);
std::unique_ptr<repo::Lock> lock_repo(repo::Repository& r, const RepoOptions& o, repo::LockKind k, const std::string& purpose);
// For read-only commands: a shared lock, or none (with a warning) on a repository
// that cannot be written (read-only mount, full disk); see repo::lock_for_reading.
std::unique_ptr<repo::Lock> lock_repo_for_reading(repo::Repository& r, const RepoOptions& o, const std::string& purpose);

// Resolves a snapshot reference; with skip_damaged, "latest" passes over damaged
// snapshots and warns, naming each (repo::resolve_snapshot).
std::string resolve_snapshot_ref(repo::Repository& r, const std::string& ref, bool skip_damaged);
// Adds --skip-damaged to a command that takes a snapshot reference.
void add_skip_damaged_option(CLI::App* cmd, bool& flag);

int exit_code_for(const Error& e);
void warn(const std::string& msg);
void info(const RepoOptions& o, const std::string& msg);
void print_json(const nlohmann::json& j);
std::string human_bytes(uint64_t n);
std::string human_duration(double seconds);

// Renders progress: a one-line bar on a terminal, JSON lines with --json, a plain
// line every 10 seconds otherwise.
class ProgressPrinter {
 public:
  ProgressPrinter(const RepoOptions& o, std::string verb);
  void operator()(const repo::Progress& p);
  void clear();

 private:
  const RepoOptions& o_;
  std::string verb_;
  bool tty_;
  double last_plain_ = -1;
  size_t last_width_ = 0;
};

// Command registration, one function per file.
void register_repo_init(CLI::App& repo, Context& ctx);
void register_repo_backup(CLI::App& repo, Context& ctx);
void register_repo_snapshots(CLI::App& repo, Context& ctx);
void register_repo_ls(CLI::App& repo, Context& ctx);
void register_repo_restore(CLI::App& repo, Context& ctx);
void register_repo_check(CLI::App& repo, Context& ctx);
void register_repo_repair(CLI::App& repo, Context& ctx);
void register_repo_forget(CLI::App& repo, Context& ctx);
void register_repo_prune(CLI::App& repo, Context& ctx);
void register_repo_key(CLI::App& repo, Context& ctx);
void register_repo_unlock(CLI::App& repo, Context& ctx);

}  // namespace cairn::ctl
