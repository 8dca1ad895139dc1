// cairnctl repo check: the repository's structure (common/repo/checker.h),
// then what the controller's signed set records say it must hold
// (controller/record_check.h).
#include <unistd.h>

#include <ctime>
#include <map>
#include <set>

#include "cairnctl/cli.h"
#include "common/repo/checker.h"
#include "common/repo/recover.h"
#include "common/util/terminal_text.h"
#ifdef CAIRN_WITH_CONTROLLER
#include "cairnctl/op_commands.h"
#include "controller/record_check.h"
#endif

namespace cairn::ctl {

namespace {
struct CheckArgs {
  bool read_data = false;
  unsigned threads = 0;
  std::string memory_budget;
  bool recover = false;
  std::vector<std::string> trusted_keys;
  std::string repository_name;
};

#ifdef CAIRN_WITH_CONTROLLER
std::string utc_text(int64_t t) {
  if (t <= 0) return "-";
  std::time_t tt = std::time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

// The set records against the snapshots here, as problems of the check.
controller::RecordCheck check_records(repo::Repository& r, const CheckArgs& a, repo::CheckReport& rep) {
  std::vector<controller::StoredRecord> records;
  for (const auto& name : r.list(repo::FileType::set_record)) {
    controller::StoredRecord s{name, std::nullopt};
    try {
      s.file = r.load_json(repo::FileType::set_record, name);
    } catch (const std::exception& e) {
      s.error = e.what();
    }
    records.push_back(std::move(s));
  }
  auto listed = r.list(repo::FileType::snapshot);
  std::set<std::string> present(listed.begin(), listed.end());
  std::map<std::string, plan::PublicKey> keys;
  for (const auto& k : trusted_keys(a.trusted_keys, "")) keys[plan::key_id(k)] = k;
  controller::TrustedKeyLookup lookup = [&](const std::string& id) -> const plan::PublicKey* {
    auto it = keys.find(id);
    return it == keys.end() ? nullptr : &it->second;
  };
  auto rc = controller::check_set_records(records, present, a.repository_name, keys.empty() ? nullptr : &lookup);
  for (const auto& m : rc.missing) {
    repo::CheckProblem p;
    p.kind = "snapshot_missing";
    p.object = "snapshots/" + m.snapshot_id;
    p.message = "snapshot " + m.snapshot_id + " (set " + m.set_id + ", task " + m.task_id + ", agent " + m.agent + ", component " +
                m.component + ", made " + utc_text(m.made_at) + (m.copy ? ", a copy" : "") +
                ") is recorded in the signed set record but not in the repository";
    rep.problems.push_back(std::move(p));
  }
  for (const auto& bad : rc.problems) {
    repo::CheckProblem p;
    p.kind = bad.untrusted ? "set_record_untrusted" : "set_record_unusable";
    p.severity = bad.error ? repo::Severity::error : repo::Severity::warning;
    p.object = "sets/" + bad.record;
    p.message = "set record " + bad.record.substr(0, 16) + (bad.set_id.empty() ? "" : " (set " + bad.set_id + ")") +
                (bad.untrusted ? " does not verify: " : " is unusable: ") + bad.why +
                (bad.error ? "; the snapshots it lists are not counted" : "; another record of the set verifies and is the one checked");
    rep.problems.push_back(std::move(p));
  }
  if (!rc.unknown_name.empty()) {
    repo::CheckProblem p;
    p.kind = "set_records_unplaced";
    p.severity = repo::Severity::warning;
    p.object = "sets/";
    p.message = "cannot tell which repository this is: " + rc.unknown_name;
    rep.problems.push_back(std::move(p));
  }
  return rc;
}
#endif
}  // namespace

void register_repo_check(CLI::App& repo, Context& ctx) {
  static CheckArgs a;
  auto* cmd = repo.add_subcommand("check", "verify the repository: index, packs, snapshots and trees (and every byte with --read-data)");
  add_repo_options(cmd, ctx.opts);
  cmd->add_flag("--read-data", a.read_data, "read every pack whole and verify every blob (reads the whole repository)");
  cmd->add_option("--threads", a.threads,
                  "packs read at once with --read-data (default: one per usable CPU, at most 8, as many as --memory-budget holds)");
  add_memory_budget_option(cmd, a.memory_budget);
  cmd->add_flag("--recover", a.recover,
                "put back, from the versions the store keeps, each damaged or deleted object that has a whole earlier "
                "version (needs the right to overwrite: the controller's credentials), then check again");
#ifdef CAIRN_WITH_CONTROLLER
  cmd->add_option("--trusted-key", a.trusted_keys,
                  "a controller signing key to verify the set records under: 'ed25519:<base64>' or a file holding one "
                  "(controller-signing.pub; repeatable, e.g. keys rotated away); without one they are read unverified")
      ->allow_extra_args(false);
  cmd->add_option("--repository-name", a.repository_name,
                  "the name the set records give this repository (default: found from the snapshots they list)");
#endif
  cmd->callback([&ctx] {
    ctx.action = [&ctx]() -> int {
      const auto& o = ctx.opts;
      // check loads the index itself and reports its problems with the rest.
      auto budget = memory_budget(a.memory_budget, repo::kOpenBytes, "opening a repository: the process and its key derivation");
      auto r = open_repo(o, false);
      auto lock = lock_repo_for_reading(*r, o, "check");
      say_memory_budget(o, budget);
      repo::CheckOptions co;
      co.read_data = a.read_data;
      co.threads = a.threads;
      co.memory_budget = budget.bytes;
      co.index_loaded = [&](const repo::Index& idx) {
        // Packs this repository writes are at most its pack size and a header.
        const uint64_t pack = r->params().pack_size + (1u << 20);
        check_memory_needs(budget, a.memory_budget,
                           repo::repository_needs(idx, a.read_data ? repo::MemoryUse::read_data : repo::MemoryUse::check, 1, pack));
      };
      co.cancel = &ctx.cancel;
      ProgressPrinter pp(o, "check");
      if (a.read_data && (!o.quiet || o.json)) {
        co.progress = [&pp](const repo::Progress& p) { pp(p); };
        co.progress_interval = std::chrono::milliseconds(isatty(2) && !o.json ? 250 : 1000);
      }
      repo::CheckReport rep = repo::check(*r, co);
#ifdef CAIRN_WITH_CONTROLLER
      auto records = check_records(*r, a, rep);
#endif
      // Damaged or deleted objects (snapshots the set records name too) a versioning
      // store still holds whole (recover.h).
      std::vector<repo::Recovery> recoveries = repo::find_recoveries(*r, rep);
      // What one round puts back can show more to put back (a pack that only a
      // damaged index file named): rounds go on while each finds something, a few at most.
      for (int round = 0; a.recover && !recoveries.empty() && round < 4; ++round) {
        for (const auto& rc : recoveries) {
          repo::apply_recovery(*r, rc);
          info(o, "recovered '" + rc.object + "': its earlier version " + rc.version + " is the current one again");
        }
        r->earlier_versions_put_back();
        info(o, "checking again after " + std::to_string(recoveries.size()) + " object(s) were put back");
        rep = repo::check(*r, co);
#ifdef CAIRN_WITH_CONTROLLER
        records = check_records(*r, a, rep);
#endif
        recoveries = repo::find_recoveries(*r, rep);
      }
      pp.clear();
#ifdef CAIRN_WITH_CONTROLLER
      const bool any_records = records.records > 0;
      const std::string unverified = "set records read without verifying their signatures (give --trusted-key to verify)";
#endif
      size_t errors = rep.errors(), warnings = rep.warnings();
      if (o.json) {
        for (const auto& p : rep.problems) {
          nlohmann::json j = repo::problem_json(p);
          j["message_type"] = "problem";
#ifdef CAIRN_WITH_CONTROLLER
          for (const auto& m : records.missing)
            if (p.kind == "snapshot_missing" && p.object == "snapshots/" + m.snapshot_id) {
              j["snapshots"] = {m.snapshot_id};
              j["set"] = m.set_id;
              j["task"] = m.task_id;
              j["agent"] = m.agent;
              j["component"] = m.component;
              j["repository"] = m.repository;
              j["made_at"] = m.made_at;
              j["copy"] = m.copy;
            }
#endif
          print_json(j);
        }
        print_json({{"message_type", "summary"},
                    {"errors", errors},
                    {"warnings", warnings},
                    {"clean", errors == 0},
                    {"read_data", a.read_data},
                    {"index_files", rep.index_files},
                    {"packs", rep.packs},
                    {"pack_bytes", rep.pack_bytes},
                    {"blobs", rep.blobs},
                    {"snapshots", rep.snapshots},
                    {"trees", rep.trees},
                    {"packs_read", rep.packs_read},
                    {"bytes_read", rep.bytes_read},
                    {"blobs_verified", rep.blobs_verified},
#ifdef CAIRN_WITH_CONTROLLER
                    {"set_records", records.records},
                    {"set_records_verified", records.verified},
                    {"repository_names", records.names},
                    {"snapshots_recorded", records.recorded.size()},
                    {"snapshots_missing", records.missing.size()},
#endif
                    {"seconds", rep.seconds}});
      } else {
        // Problems print even with --quiet: they are what the command is for.
        for (const auto& p : rep.problems) std::printf("%s\n", terminal_safe(repo::problem_line(p)).c_str());
        std::string recorded;
#ifdef CAIRN_WITH_CONTROLLER
        if (any_records && !records.verified && !o.quiet) std::printf("note: %s\n", unverified.c_str());
        if (any_records)
          recorded = ", " + std::to_string(records.recorded.size() - records.missing.size()) + " of " +
                     std::to_string(records.recorded.size()) + " recorded in set records";
#endif
        info(o,
             "checked " + std::to_string(rep.snapshots) + " snapshots" + recorded + ", " + std::to_string(rep.trees) + " trees, " +
                 std::to_string(rep.packs) + " packs (" + human_bytes(rep.pack_bytes) + "), " + std::to_string(rep.index_files) +
                 " index files" +
                 (a.read_data ? "; read " + human_bytes(rep.bytes_read) + " and verified " + std::to_string(rep.blobs_verified) + " blobs"
                              : "; data not read (use --read-data)") +
                 " in " + human_duration(rep.seconds));
        std::string w = warnings ? ", " + std::to_string(warnings) + (warnings == 1 ? " warning" : " warnings") : "";
        if (errors == 0)
          std::printf("no errors were found%s\n", w.c_str());
        else
          std::printf("%zu %s found%s\n", errors, errors == 1 ? "error" : "errors", w.c_str());
        std::fflush(stdout);
      }
      return errors ? kExitError : kExitOk;
    };
  });
}

}  // namespace cairn::ctl
