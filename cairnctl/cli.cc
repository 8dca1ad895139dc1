#include "cairnctl/cli.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "common/repo/memory.h"
#include "common/repo/snapshot.h"
#include "common/repo/storage/backend.h"
#include "common/util/cpus.h"
#include "common/util/fs.h"
#include "common/util/terminal_text.h"

namespace cairn::ctl {

void add_repo_options(CLI::App* cmd, RepoOptions& o) {
  cmd->add_option("--repo,-r", o.repo,
                  "repository location: a directory, s3:https://host[:port]/bucket[/prefix], s3://bucket[/prefix], "
                  "azure://account/container[/prefix] or azure:https://host[:port]/account/container[/prefix]")
      ->envname("CAIRN_REPOSITORY")
      ->required();
  cmd->add_option("--storage-credentials", o.storage_credentials,
                  "file (mode 0600) of a remote repository's credentials, KEY=VALUE lines; default: the store's standard sources "
                  "(S3: AWS_ACCESS_KEY_ID, ~/.aws/credentials, instance metadata; Azure: AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN, "
                  "AZURE_STORAGE_CONNECTION_STRING)")
      ->envname("CAIRN_STORAGE_CREDENTIALS");
  cmd->add_flag("--no-cache", o.no_cache,
                "a remote repository: do not use the local cache of its index, snapshots and trees "
                "(default: in CAIRN_CACHE_DIR, $XDG_CACHE_HOME/cairn or ~/.cache/cairn)");
  cmd->add_option("--password-file", o.password_file, "file holding the passphrase (mode 0600)")->envname("CAIRN_PASSWORD_FILE");
  cmd->add_option("--key-file", o.key_file, "file holding a repository key (mode 0600), instead of a passphrase")
      ->envname("CAIRN_KEY_FILE");
  cmd->add_flag("--json", o.json, "machine-readable output (JSON lines)");
  cmd->add_flag("--quiet,-q", o.quiet, "print only errors and warnings");
  cmd->add_option("--retry-lock", o.retry_lock, "wait this long for a conflicting lock (e.g. 5min, 1h)");
}

repo::Secret read_secret(const RepoOptions& o, const char* file_opt, const std::string& file_override) {
  if (!file_override.empty()) return {repo::Secret::Kind::passphrase, read_secret_file(file_override)};
  if (!o.key_file.empty()) return {repo::Secret::Kind::key_file, read_secret_file(o.key_file)};
  if (!o.password_file.empty()) return {repo::Secret::Kind::passphrase, read_secret_file(o.password_file)};
  throw Error(Errc::invalid_input, std::string("no passphrase given: use ") + file_opt +
                                       " FILE (mode 0600) or set CAIRN_PASSWORD_FILE; passphrases are never taken from the command line");
}

std::unique_ptr<repo::Backend> make_backend(const RepoOptions& o) {
  if (o.repo.empty()) throw Error(Errc::invalid_input, "no repository given: use --repo PATH or set CAIRN_REPOSITORY");
  return repo::open_backend(o.repo, {.credentials_file = o.storage_credentials, .cache_dir = o.no_cache ? "off" : ""});
}

nlohmann::json storage_json(const repo::Backend& be) {
  auto c = be.counters();
  return {{"requests", c.requests}, {"retries", c.retries}, {"bytes_sent", c.bytes_sent}, {"bytes_received", c.bytes_received}};
}

std::string storage_line(const repo::Backend& be) {
  auto c = be.counters();
  return "store: " + std::to_string(c.requests) + " requests (" + std::to_string(c.retries) + " retried), " + human_bytes(c.bytes_sent) +
         " sent, " + human_bytes(c.bytes_received) + " received";
}

std::unique_ptr<repo::Repository> open_repo(const RepoOptions& o, bool load_index) {
  // Repository::open says when there is none (Errc::no_repo), with the same advice.
  auto r = repo::Repository::open(make_backend(o), read_secret(o));
  if (load_index)
    for (const auto& p : r->load_index())
      warn("index file '" + p.index_file + "' is unusable: " + p.message +
           " (run 'cairnctl repo check', then 'cairnctl repo repair index')");
  return r;
}

static std::chrono::seconds lock_wait(const RepoOptions& o) {
  if (o.retry_lock.empty()) return std::chrono::seconds(0);
  int64_t s = parse_duration(o.retry_lock);
  if (s < 0) throw Error(Errc::invalid_input, "--retry-lock '" + o.retry_lock + "' is not a duration (try 30s, 5min, 1h)");
  return std::chrono::seconds(s);
}

std::unique_ptr<repo::Lock> lock_repo(repo::Repository& r, const RepoOptions& o, repo::LockKind k, const std::string& purpose) {
  return repo::Lock::acquire(r, k, purpose, lock_wait(o), [](const std::string& m) { warn(m); });
}

std::unique_ptr<repo::Lock> lock_repo_for_reading(repo::Repository& r, const RepoOptions& o, const std::string& purpose) {
  return repo::lock_for_reading(r, purpose, lock_wait(o), [](const std::string& m) { warn(m); });
}

std::string resolve_snapshot_ref(repo::Repository& r, const std::string& ref, bool skip_damaged) {
  std::vector<std::pair<std::string, std::string>> skipped;
  std::string id = repo::resolve_snapshot(r, ref, skip_damaged, &skipped);
  for (const auto& [bad, why] : skipped)
    warn("skipped damaged snapshot '" + bad.substr(0, 8) + "' (" + why + "); 'latest' is '" + id.substr(0, 8) +
         "', the newest readable one");
  return id;
}

void add_skip_damaged_option(CLI::App* cmd, bool& flag) {
  cmd->add_flag("--skip-damaged", flag, "let 'latest' pass over damaged snapshots (each is named in a warning) instead of refusing");
}

int exit_code_for(const Error& e) {
  switch (e.code()) {
    case Errc::no_repo:
      return kExitNoRepo;
    case Errc::locked:
      return kExitLocked;
    case Errc::wrong_key:
      return kExitWrongKey;
    case Errc::corrupt:
      return kExitDamaged;
    case Errc::denied:
      return kExitDenied;
    case Errc::unavailable:
      return kExitUnavailable;
    default:
      return kExitError;
  }
}

// Warnings and messages echo names from repositories and file systems: never raw to the terminal.
// One line each: a newline inside msg (a file name can hold one) is shown
// escaped, never written raw to the terminal. A message of two lines is two calls.
void warn(const std::string& msg) { std::fprintf(stderr, "cairnctl: warning: %s\n", terminal_safe(msg).c_str()); }

void info(const RepoOptions& o, const std::string& msg) {
  if (o.quiet || o.json) return;
  std::fprintf(stdout, "%s\n", terminal_safe(msg).c_str());
  std::fflush(stdout);
}

void print_json(const nlohmann::json& j) {
  std::string s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::fprintf(stdout, "%s\n", s.c_str());
  std::fflush(stdout);
}

void add_memory_budget_option(CLI::App* cmd, std::string& value) {
  cmd->add_option("--memory-budget", value,
                  "what buffers may hold, e.g. 256M or 2G; sizes the thread pools (default: half the cgroup memory limit, else 512M)");
}

repo::MemoryBudget memory_budget(const std::string& value, uint64_t least, const char* why) {
  std::optional<uint64_t> configured;
  if (!value.empty()) {
    configured = repo::parse_byte_size(value);
    if (!configured)
      throw Error(Errc::invalid_input,
                  "--memory-budget '" + value + "' is not a size: give bytes or a number with K, M, G or T (e.g. 256M)");
    if (*configured < least)
      throw Error(Errc::invalid_input,
                  "--memory-budget " + value + " is below the minimum of " + repo::byte_size_text(least) + " (" + why + ")");
  }
  return repo::resolve_memory_budget(configured, "--memory-budget");
}

void check_memory_needs(const repo::MemoryBudget& b, const std::string& value, const repo::RepositoryNeeds& n) {
  if (b.bytes >= n.total) return;
  if (!value.empty())
    throw Error(Errc::invalid_input, "--memory-budget " + value + " " + repo::below_needs_text(n) + "; give at least " +
                                         repo::least_budget_text(n.total) + " or leave it unset");
  if (b.source != repo::MemoryBudget{}.source)
    warn("the memory budget, " + b.describe() + ", " + repo::below_needs_text(n) +
         "; the command goes on, in the rest of the limit (raise the limit, or set a budget of at least " +
         repo::least_budget_text(n.total) + ")");
}

void say_memory_budget(const RepoOptions& o, const repo::MemoryBudget& b) {
  // Said when something other than the default chose it (the option, a
  // cgroup limit), so an operator sees what a limit did to the pool sizes.
  if (o.quiet || o.json || b.source == repo::MemoryBudget{}.source) return;
  std::fprintf(stderr, "memory budget %s; usable CPUs %s\n", b.describe().c_str(), cpu_limit().describe().c_str());
}

std::string human_bytes(uint64_t n) { return repo::byte_size_text(n, repo::ByteText::tenths); }

std::string human_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  long t = long(s + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%ld:%02ld", t / 60, t % 60);
  return buf;
}

ProgressPrinter::ProgressPrinter(const RepoOptions& o, std::string verb) : o_(o), verb_(std::move(verb)), tty_(isatty(2)) {}

void ProgressPrinter::operator()(const repo::Progress& p) {
  double rate = p.elapsed_s > 0 ? double(p.bytes_done) / p.elapsed_s : 0;
  double eta = (p.totals_known && rate > 0 && p.bytes_total >= p.bytes_done) ? double(p.bytes_total - p.bytes_done) / rate : -1;
  if (o_.json) {
    nlohmann::json j = {{"message_type", "status"},
                        {"action", verb_},
                        {"phase", p.phase},
                        {"files_done", p.files_done},
                        {"files_total", p.files_total},
                        {"bytes_done", p.bytes_done},
                        {"bytes_total", p.bytes_total},
                        {"bytes_new", p.bytes_new},
                        {"errors", p.errors},
                        {"totals_known", p.totals_known},
                        {"elapsed_s", p.elapsed_s},
                        {"rate_bytes_per_s", rate},
                        {"current", p.current}};
    if (eta >= 0) j["eta_s"] = eta;
    print_json(j);
    return;
  }
  if (o_.quiet) return;
  double pct = p.bytes_total ? 100.0 * double(p.bytes_done) / double(p.bytes_total) : 0;
  char head[256];
  std::snprintf(head, sizeof head, "[%s] %5.1f%% %llu/%llu files %s/%s %s/s ETA %s", human_duration(p.elapsed_s).c_str(), pct,
                (unsigned long long)p.files_done, (unsigned long long)p.files_total, human_bytes(p.bytes_done).c_str(),
                human_bytes(p.bytes_total).c_str(), human_bytes(uint64_t(rate)).c_str(), eta >= 0 ? human_duration(eta).c_str() : "-");
  std::string line = head;
  if (p.errors) line += " " + std::to_string(p.errors) + " errors";
  if (tty_) {
    std::string cur = terminal_safe(p.current);
    size_t room = 110 > line.size() + 3 ? 110 - line.size() - 3 : 0;
    if (cur.size() > room) {
      size_t from = cur.size() - (room > 3 ? room - 3 : 0);
      while (from < cur.size() && (static_cast<unsigned char>(cur[from]) & 0xc0) == 0x80) ++from;  // whole characters
      cur = room > 3 ? "..." + cur.substr(from) : "";
    }
    if (!cur.empty()) line += "  " + cur;
    std::string pad = last_width_ > line.size() ? std::string(last_width_ - line.size(), ' ') : "";
    std::fprintf(stderr, "\r%s%s", line.c_str(), pad.c_str());
    std::fflush(stderr);
    last_width_ = line.size();
  } else if (last_plain_ < 0 || p.elapsed_s - last_plain_ >= 10 || p.phase == "done") {
    std::fprintf(stderr, "%s %s\n", verb_.c_str(), line.c_str());
    last_plain_ = p.elapsed_s;
  }
}

void ProgressPrinter::clear() {
  if (tty_ && !o_.json && last_width_) {
    std::fprintf(stderr, "\r%s\r", std::string(last_width_, ' ').c_str());
    last_width_ = 0;
  }
}

}  // namespace cairn::ctl
