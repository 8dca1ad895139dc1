// HaproxyDriver::restore: stage, check with `haproxy -c`, swap in, reload,
// set the runtime state back. Nothing on the host changes before the check
// passed; a failed reload puts the previous files back.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <set>
#include <thread>

#include "agent/drivers/haproxy/file_swap.h"
#include "agent/drivers/haproxy/haproxy_driver.h"
#include "agent/drivers/repo_progress.h"
#include "agent/failpoint.h"
#include "agent/platform/process.h"
#include "agent/platform/service.h"
#include "common/repo/restorer.h"
#include "common/repo/snapshot.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::haproxy {

namespace v1 = cairn::v1;
namespace sfs = std::filesystem;

namespace {

bool exists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

bool is_dir(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string dir_of(const std::string& p) {
  size_t s = p.rfind('/');
  return s == 0 || s == std::string::npos ? "/" : p.substr(0, s);
}

std::string base_of(const std::string& p) { return p.substr(p.rfind('/') + 1); }

std::string read_text(const std::string& p) {
  Bytes b = read_file(p, 64u << 20);
  return std::string(b.begin(), b.end());
}

void write_text(const std::string& p, const std::string& s, int mode = 0600) {
  write_file_atomic(p, std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()), mode);
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  for (size_t i = s.find(from); i != std::string::npos; i = s.find(from, i + to.size())) s.replace(i, from.size(), to);
}

struct StageGuard {
  std::string dir;
  ~StageGuard() {
    std::error_code ec;
    if (!dir.empty()) sfs::remove_all(dir, ec);
  }
};

// haproxy -c's complaint, with the staging names turned back into the real ones.
std::string check_message(const platform::ProcessResult& pr, const std::vector<std::pair<std::string, std::string>>& names,
                          const std::string& root) {
  std::string all = pr.err + pr.out;
  for (const auto& [from, to] : names) replace_all(all, from, to);
  replace_all(all, root, "");
  std::string alerts;
  int n = 0;
  size_t i = 0;
  while (i < all.size() && n < 12) {
    size_t j = all.find('\n', i);
    if (j == std::string::npos) j = all.size();
    std::string l = all.substr(i, j - i);
    i = j + 1;
    if (l.find("[ALERT]") == std::string::npos) continue;
    size_t c = l.find(") : ");
    if (c != std::string::npos) l = l.substr(c + 4);
    alerts += (alerts.empty() ? "" : "; ") + l;
    ++n;
  }
  return alerts.empty() ? pr.describe() : alerts;
}

// Which paths a restore may write: declared ones (config, extra_files) and
// what lies below them, files the live configuration references (with a
// certificate's companions, and what a crt directory holds), and files the
// restored configuration references that lie next to one the live
// configuration uses (a renamed certificate). A snapshot is chosen by a plan
// and written by anyone with the repository password: it names files, the
// component decides which ones may be written.
class WritePolicy {
 public:
  WritePolicy(const Settings& s, const FileSet& live, const std::string& root) : root_(root) {
    declared_ = s.config;
    declared_.insert(declared_.end(), s.extra_files.begin(), s.extra_files.end());
    for (const auto& d : declared_) dirs_.insert(is_dir(d) || (!root.empty() && is_dir(root + d)) ? d : dir_of(d));
    for (const auto& r : live.parsed.refs) files_.insert(r.path), dirs_.insert(dir_of(r.path));
    // live.present holds the targets of links too (FileSet): they may be written.
    for (const auto& p : live.present) dirs_.insert(is_dir(p) ? p : dir_of(p)), present_.insert(p);
  }
  void add_restored(const std::vector<Reference>& refs) {
    restored_known_ = true;
    for (const auto& r : refs)
      if (dirs_.count(dir_of(r.path))) files_.insert(r.path);
  }
  bool allows(const std::string& p) const {
    for (const auto& d : declared_)
      if (path_within(p, d)) return true;
    if (files_.count(p)) return true;
    for (const auto& q : present_)
      if (path_within(p, q)) return true;
    for (const auto& f : files_) {
      if (p.size() > f.size() && p.compare(0, f.size(), f) == 0 && p[f.size()] == '.') return true;  // site.pem.key, .ocsp, .rsa
      if (path_within(p, f) && (is_dir(f) || (!root_.empty() && is_dir(root_ + f)))) return true;    // a crt directory
    }
    // Before extraction only the snapshot's roots are known: one next to a
    // live file is checked again against the restored configuration.
    return !restored_known_ && dirs_.count(dir_of(p));
  }

 private:
  std::string root_;
  std::vector<std::string> declared_;
  std::set<std::string> files_, dirs_, present_;
  bool restored_known_ = false;
};

}  // namespace

std::vector<v1::Reason> HaproxyDriver::check_snapshot(const repo::Snapshot& snap) const {
  WritePolicy policy(settings_, files(), "");
  const std::string runtime_name = base_of(runtime_snapshot_path());
  for (const auto& p : snap.paths) {
    if (base_of(p) == runtime_name) continue;
    if (!policy.allows(p))
      return {make_reason(v1::ERROR_CODE_UNSUPPORTED_TASK,
                          "snapshot '" + snap.id.substr(0, 8) + "' holds '" + p + "', which neither component '" + component_ +
                              "' declares nor its configuration references; nothing was restored",
                          p)};
  }
  return {};
}

DriverResult HaproxyDriver::restore(TaskContext& ctx, const RestoreSpec& spec) {
  DriverResult res;
  auto fail = [&](v1::ErrorCode code, const std::string& why, const std::string& item = {}) {
    res.reasons.push_back(make_reason(code, why, item));
    res.outcome = v1::TASK_OUTCOME_FAILED;
    return res;
  };
  auto progress = [&](v1::Phase phase, const std::string& what) {
    if (!ctx.progress) return;
    WorkProgress w;
    w.phase = phase;
    w.current = what;
    ctx.progress(w);
  };
  if (!spec.target_name.empty())
    return fail(v1::ERROR_CODE_UNSUPPORTED_TASK,
                "component '" + component_ + "' (haproxy) declares no restore target '" + spec.target_name + "'");
  if (spec.step != v1::RESTORE_STEP_ALL)
    return fail(v1::ERROR_CODE_UNSUPPORTED_TASK, "component '" + component_ + "' is restored in one step (node scope)");

  std::string id;
  repo::Snapshot snap;
  try {
    id = repo::resolve_snapshot(*ctx.repo, spec.snapshot_id);
    snap = repo::load_snapshot(*ctx.repo, id);
  } catch (const Error& e) {
    return fail(v1::ERROR_CODE_SNAPSHOT_NOT_FOUND, "snapshot '" + spec.snapshot_id + "' cannot be read: " + e.what());
  }
  res.snapshot_id = id;
  res.manifest_digest = id;

  // 1. Everything into a staging directory of our own.
  StageGuard guard;
  {
    std::string tmpl = settings_.staging_dir + "/cairn-haproxy-restore.XXXXXX";
    if (!::mkdtemp(tmpl.data()))
      return fail(v1::ERROR_CODE_IO_ERROR,
                  "cannot create a staging directory in '" + settings_.staging_dir + "': " + std::strerror(errno) + " (set 'staging_dir')");
    guard.dir = tmpl;
  }
  const std::string root = guard.dir + "/root";
  progress(v1::PHASE_RESTORE, "extracting the snapshot to " + root);
  repo::RestoreOptions ro;
  ro.memory_budget = ctx.memory_budget;
  ro.target = root;
  ro.overwrite = true;
  ro.cancel = ctx.cancel;
  ro.progress = repo_progress(ctx, v1::PHASE_RESTORE);
  repo::RestoreResult rr;
  try {
    rr = repo::restore(*ctx.repo, id, ro);
  } catch (const Error& e) {
    v1::ErrorCode code = e.code() == Errc::corrupt       ? v1::ERROR_CODE_REPOSITORY_CORRUPT
                         : e.code() == Errc::interrupted ? v1::ERROR_CODE_CANCELLED
                                                         : v1::ERROR_CODE_IO_ERROR;
    return fail(code, std::string("the snapshot could not be extracted; nothing was changed: ") + e.what());
  }
  if (!rr.failures.empty())
    return fail(v1::ERROR_CODE_REPOSITORY_CORRUPT,
                "'" + rr.failures[0].path + "' could not be extracted (" + rr.failures[0].reason + "); nothing was changed",
                rr.failures[0].path);
  res.bytes = rr.bytes_restored;
  DriverResult staged_res = restore_staged(ctx, guard.dir, "snapshot '" + id.substr(0, 8) + "'", spec.write_mode);
  staged_res.snapshot_id = id;
  staged_res.manifest_digest = id;
  staged_res.bytes = rr.bytes_restored;
  return staged_res;
}

DriverResult HaproxyDriver::restore_staged(TaskContext& ctx, const std::string& stage, const std::string& label,
                                           v1::RestoreWriteMode write_mode) {
  DriverResult res;
  auto fail = [&](v1::ErrorCode code, const std::string& why, const std::string& item = {}) {
    res.reasons.push_back(make_reason(code, why, item));
    res.outcome = v1::TASK_OUTCOME_FAILED;
    return res;
  };
  auto progress = [&](v1::Phase phase, const std::string& what) {
    if (!ctx.progress) return;
    WorkProgress w;
    w.phase = phase;
    w.current = what;
    ctx.progress(w);
  };
  const std::string root = stage + "/root";

  // 2. What the snapshot's configuration references, read from the staged copy.
  FileSet staged = files(root);
  if (staged.parsed.files.empty())
    return fail(v1::ERROR_CODE_SNAPSHOT_NOT_FOUND, label + " holds no configuration of component '" + component_ + "' (" +
                                                       (staged.parsed.errors.empty() ? "" : staged.parsed.errors[0]) +
                                                       "); nothing was changed");

  // 3. Nothing is written outside what this component declares or its
  // configurations (live or restored, next to a file the live one uses) name:
  // the plan picks the snapshot, not the paths.
  WritePolicy policy(settings_, files(), root);
  policy.add_restored(staged.parsed.refs);
  auto allowed = [&](const std::string& p) { return policy.allows(p); };
  const std::string runtime_name = base_of(runtime_snapshot_path());
  std::string runtime_dir;
  std::vector<std::string> to_install;  // real paths
  {
    std::error_code ec;
    for (auto it = sfs::recursive_directory_iterator(root, ec); !ec && it != sfs::recursive_directory_iterator(); it.increment(ec)) {
      std::string p = it->path().string();
      std::string real = p.substr(root.size());
      if (it->is_directory(ec) && !it->is_symlink(ec)) {
        if (base_of(real) == runtime_name) {
          if (runtime_dir.empty() || real == runtime_snapshot_path()) runtime_dir = p;
          it.disable_recursion_pending();
        }
        continue;
      }
      if (!allowed(real))
        return fail(v1::ERROR_CODE_UNSUPPORTED_TASK,
                    label + " holds '" + real + "', which neither component '" + component_ +
                        "' declares nor its configuration references; nothing was changed",
                    real);
      to_install.push_back(real);
    }
    if (ec) return fail(v1::ERROR_CODE_IO_ERROR, "cannot walk the staging directory '" + root + "': " + ec.message());
  }
  std::sort(to_install.begin(), to_install.end());

  // 4. haproxy -c on the restored configuration, its references pointed at
  // the staged copies (rewritten copies under check/, the staged files stay
  // as they were backed up).
  progress(v1::PHASE_VERIFY, "haproxy -c on the restored configuration");
  const std::string check = stage + "/check";
  std::vector<std::pair<std::string, std::string>> names;  // check path -> real path, for haproxy's messages
  std::map<std::string, std::string> check_copy;           // real config/crt-list path -> its check copy
  std::vector<std::string> argv = {settings_.haproxy, "-c"};
  try {
    mkdir_p(check, 0700);
    for (size_t i = 0; i < settings_.config.size(); ++i) {
      const std::string& c = settings_.config[i];
      std::string slot = check + "/" + std::to_string(i);
      mkdir_p(slot, 0700);
      if (is_dir(root + c)) {
        for (const auto& f : staged.parsed.files)
          if (!f.crt_list && dir_of(f.path) == c) check_copy[f.path] = slot + "/" + base_of(f.path);
        argv.insert(argv.end(), {"-f", slot});
        names.emplace_back(slot, c);
      } else {
        check_copy[c] = slot + "/" + base_of(c);
        argv.insert(argv.end(), {"-f", check_copy[c]});
      }
    }
    size_t k = 0;
    for (const auto& f : staged.parsed.files)
      if (f.crt_list) check_copy[f.path] = check + "/crt-list-" + std::to_string(k++) + "-" + base_of(f.path);
    for (const auto& f : staged.parsed.files) {
      if (!check_copy.count(f.path)) continue;
      std::vector<Edit> edits;
      for (const auto& r : staged.parsed.refs) {
        if (r.file != f.path || !r.rewritable) continue;
        std::string to;
        if (r.kind == RefKind::crt_list && check_copy.count(r.path))
          to = check_copy[r.path];
        else if (exists(root + r.path) || (r.kind == RefKind::crt && (exists(root + r.path + ".rsa") || exists(root + r.path + ".ecdsa"))))
          to = root + r.path;
        if (!to.empty()) edits.push_back({r.line, r.raw_begin, r.raw_end, quote_word(to)});
      }
      write_text(check_copy[f.path], apply_edits(read_text(root + f.path), edits));
      names.emplace_back(check_copy[f.path], f.path);
    }
  } catch (const Error& e) {
    return fail(v1::ERROR_CODE_IO_ERROR, std::string("cannot prepare the configuration check: ") + e.what());
  }
  std::sort(names.begin(), names.end(), [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  platform::ProcessSpec ps;
  ps.argv = argv;
  ps.cwd = settings_.working_dir;
  ps.timeout = std::chrono::seconds(120);
  ps.cancel = ctx.cancel;
  platform::ProcessResult pr;
  try {
    pr = platform::run_process(ps);
  } catch (const Error& e) {
    return fail(v1::ERROR_CODE_PREFLIGHT_FAILED,
                std::string("cannot run haproxy to check the restored configuration: ") + e.what() + "; nothing was changed");
  }
  if (!pr.ok())
    return fail(v1::ERROR_CODE_PREFLIGHT_FAILED,
                "haproxy -c refused the restored configuration of " + label + "; nothing was changed: " + check_message(pr, names, root));

  // The saved runtime state, read before anything changes.
  bool have_runtime = false;
  RuntimeState saved;
  if (!runtime_dir.empty()) {
    try {
      saved = runtime_from_json(nlohmann::json::parse(read_text(runtime_dir + "/runtime.json")));
      have_runtime = true;
    } catch (const std::exception& e) {
      res.reasons.push_back(
          make_reason(v1::ERROR_CODE_ITEM_SKIPPED, std::string("the snapshot's runtime state cannot be read: ") + e.what()));
    }
  } else {
    res.reasons.push_back(make_reason(v1::ERROR_CODE_ITEM_SKIPPED,
                                      label + " holds no runtime state (servers, stick tables, maps); only files were restored"));
  }

  // 5. The files into place, the previous ones kept aside.
  std::string old_pid;
  try {
    old_pid = parse_info(cli("show info", std::chrono::seconds(5)))["Pid"];
  } catch (const Error&) {
  }
  FileSwap swap(utc_stamp());
  // The restore's record (agent/restore_journal.h): every change is in it
  // before it is made, so an agent killed before the end puts the previous
  // files back and reloads haproxy at its next start.
  JournalGuard journal(ctx.journal, in_place_restore(ctx, swap.stamp(), InPlaceRestore::State::swapping));
  swap.before_change([&journal](const std::string& dst, const std::string& old) {
    journal.record().moves.push_back({dst, old});
    journal.write();
  });
  try {
    for (const auto& real : to_install) {
      progress(v1::PHASE_RESTORE, real);
      if (ctx.cancel && ctx.cancel->load()) throw Error(Errc::interrupted, "cancelled");
      swap.install(root + real, real);
    }
    if (write_mode != v1::RESTORE_WRITE_MODE_MERGE) {
      // A *.cfg file added to a configuration directory since the backup
      // would still be read by haproxy: it is set aside too.
      for (const auto& c : settings_.config) {
        if (!is_dir(c) || !is_dir(root + c)) continue;
        std::error_code ec;
        for (const auto& e : sfs::directory_iterator(c, ec)) {
          std::string nm = e.path().filename().string();
          if (nm.empty() || nm[0] == '.' || nm.size() < 5 || nm.compare(nm.size() - 4, 4, ".cfg") != 0) continue;
          if (!exists(root + c + "/" + nm)) swap.set_aside(c + "/" + nm);
        }
      }
    }
    if (have_runtime && !staged.parsed.server_state_file.empty()) swap.install_bytes(saved.servers_state, staged.parsed.server_state_file);
  } catch (const Error& e) {
    auto problems = swap.rollback();
    if (!problems.empty()) journal.keep();  // the agent's next start tries again
    std::string extra;
    for (const auto& p : problems) extra += "; " + p;
    return fail(e.code() == Errc::interrupted ? v1::ERROR_CODE_CANCELLED : v1::ERROR_CODE_IO_ERROR,
                std::string("the restored files could not be put in place (") + e.what() + "); the previous files were put back" + extra);
  }
  res.files = swap.changed().size();
  failpoint("restore.haproxy.swapped");  // fault injection for tests (agent/failpoint.h)

  // 6. Reload, and wait for the new process on the stats socket.
  progress(v1::PHASE_START_SERVICE, "reloading haproxy");
  try {
    platform::Service(settings_.service).reload(ctx.cancel);
  } catch (const Error& e) {
    auto problems = swap.rollback();
    if (!problems.empty()) journal.keep();  // the agent's next start tries again
    std::string extra;
    for (const auto& p : problems) extra += "; " + p;
    return fail(v1::ERROR_CODE_SERVICE_CONTROL_FAILED,
                std::string("reloading haproxy failed: ") + e.what() + "; the previous files were put back" + extra);
  }
  std::string new_pid;
  for (int i = 0; i < 150; ++i) {
    try {
      new_pid = parse_info(cli("show info", std::chrono::seconds(2)))["Pid"];
      if (!new_pid.empty() && new_pid != old_pid) break;
    } catch (const Error&) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  if (new_pid.empty() || new_pid == old_pid)
    res.reasons.push_back(make_reason(v1::ERROR_CODE_SERVICE_CONTROL_FAILED,
                                      "after the reload, the stats socket '" + settings_.stats_socket + "' still answers from process " +
                                          (old_pid.empty() ? "(none)" : old_pid) + " after 30 s; the runtime state was set on it"));

  // 7. The runtime state back over the socket.
  size_t commands = 0;
  nlohmann::json recorded;
  if (have_runtime) {
    progress(v1::PHASE_RESTORE, "setting servers, stick tables and maps back");
    AppliedRuntime applied = apply_runtime(saved, [&](const std::string& cmd) { return cli(cmd); });
    commands = applied.commands;
    for (const auto& [why, item] : applied.problems) res.reasons.push_back(make_reason(v1::ERROR_CODE_ITEM_SKIPPED, why, item));
    nlohmann::json ss = nlohmann::json::array();
    for (const auto& s : applied.servers) ss.push_back({s.backend, s.server, s.forced(), s.weight});
    recorded["server_state"] = ss;
    // The runner verifies the servers against the snapshot's metadata next;
    // the metadata lists the first 2000 servers, this checks every one.
    if (recorded["server_state"].size() > 2000) {
      std::vector<v1::Reason> diff = verify(ctx, recorded);
      res.reasons.insert(res.reasons.end(), diff.begin(), diff.end());
    }
  }

  res.metadata = {{"files_changed", swap.changed()},
                  {"kept_aside", swap.kept()},
                  {"pid_before", old_pid},
                  {"pid_after", new_pid},
                  {"runtime_commands", commands}};
  res.outcome = res.reasons.empty() ? v1::TASK_OUTCOME_SUCCEEDED : v1::TASK_OUTCOME_PARTIAL;
  return res;
}

std::string HaproxyDriver::recover_interrupted_restore(const InPlaceRestore& r) {
  if (std::string left = put_back_moves(r); !left.empty()) throw Error(Errc::io, "could not put back:" + left);
  try {
    platform::Service(settings_.service).reload();
  } catch (const Error& e) {
    throw Error(Errc::io, std::string("the previous files are back, but reloading haproxy on them failed: ") + e.what());
  }
  return "the previous files are back (" + std::to_string(r.moves.size()) + " changed; the restored ones are kept as <file>.cairn-failed-" +
         r.stamp + ") and haproxy was reloaded on them";
}

}  // namespace cairn::agent::haproxy
