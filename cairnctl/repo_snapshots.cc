#include <ctime>

#include "cairnctl/cli.h"
#include "common/repo/snapshot.h"
#include "common/repo/tree.h"
#include "common/repo/walk.h"
#include "common/util/encoding.h"
#include "common/util/terminal_text.h"

namespace cairn::ctl {

static nlohmann::json snapshot_json(const repo::Snapshot& s) {
  nlohmann::json j = repo::encode_snapshot(s);
  j["id"] = s.id;
  j["short_id"] = s.id.substr(0, 8);
  return j;
}

void register_repo_snapshots(CLI::App& repo, Context& ctx) {
  auto* cmd = repo.add_subcommand("snapshots", "list snapshots");
  add_repo_options(cmd, ctx.opts);
  cmd->callback([&ctx] {
    ctx.action = [&ctx]() -> int {
      const auto& o = ctx.opts;
      auto r = open_repo(o, false);
      std::vector<std::pair<std::string, std::string>> bad;
      auto snaps = repo::load_snapshots(*r, &bad);
      // Damaged snapshots are listed (after the readable ones: their time is unknown), never hidden.
      for (const auto& [id, why] : bad) warn("snapshot '" + id.substr(0, 8) + "' is damaged: " + why + " (run 'cairnctl repo check')");
      if (o.json) {
        nlohmann::json arr = nlohmann::json::array();
        for (const auto& s : snaps) arr.push_back(snapshot_json(s));
        for (const auto& [id, why] : bad) arr.push_back({{"id", id}, {"short_id", id.substr(0, 8)}, {"damaged", true}, {"error", why}});
        print_json(arr);
        return bad.empty() ? kExitOk : kExitDamaged;
      }
      std::printf("%-8s  %-20s  %-16s  %-8s  %-10s  %s\n", "ID", "Time", "Host", "Status", "Size", "Paths / Tags");
      for (const auto& s : snaps) {
        std::string when = s.time.substr(0, 19);
        std::replace(when.begin(), when.end(), 'T', ' ');
        std::string paths;
        for (const auto& p : s.paths) paths += (paths.empty() ? "" : ", ") + p;
        if (!s.tags.empty()) {
          paths += "  [";
          for (size_t i = 0; i < s.tags.size(); ++i) paths += (i ? "," : "") + s.tags[i];
          paths += "]";
        }
        // Host names, paths and tags are the snapshot's own text, shown escaped.
        std::printf("%-8s  %-20s  %-16s  %-8s  %-10s  %s\n", terminal_safe(s.id.substr(0, 8)).c_str(), terminal_safe(when).c_str(),
                    terminal_safe(s.hostname.substr(0, 16)).c_str(), s.partial ? "partial" : "ok",
                    human_bytes(s.summary.value("bytes_total", uint64_t(0))).c_str(), terminal_safe(paths).c_str());
      }
      for (const auto& [id, why] : bad)
        std::printf("%-8s  %-20s  %-16s  %-8s  %-10s  %s\n", terminal_safe(id.substr(0, 8)).c_str(), "?", "?", "damaged", "?",
                    "(unreadable: see the warning above)");
      std::printf("%zu snapshots%s\n", snaps.size() + bad.size(),
                  bad.empty() ? "" : (" (" + std::to_string(bad.size()) + " damaged)").c_str());
      return bad.empty() ? kExitOk : kExitDamaged;
    };
  });
}

namespace {
// Names are bytes in a tree. JSON keeps the readable form under key (invalid
// UTF-8 replaced by U+FFFD) and, when the bytes are not UTF-8, the exact bytes
// under key_b64, as the tree format does (docs/cli.md).
void put_name(nlohmann::json& j, const char* key, const std::string& bytes) {
  j[key] = bytes;
  if (!utf8_valid(bytes)) j[std::string(key) + "_b64"] = to_base64(as_bytes(bytes));
}

// Prints each entry as the walk reaches it: nothing accumulates, and the walk's
// bounds (depth, entries) end a tree bomb with a clear error.
class Lister : public repo::TreeVisitor {
 public:
  Lister(bool json, bool long_fmt) : json_(json), long_(long_fmt) {}
  bool enter(const std::string& path, repo::Node& n, size_t) override {
    if (json_) {
      nlohmann::json j = {{"type", repo::node_type_name(n.type)},
                          {"mode", n.mode},
                          {"uid", n.uid},
                          {"gid", n.gid},
                          {"size", n.size},
                          {"mtime_ns", n.mtime_ns}};
      put_name(j, "path", path);
      put_name(j, "name", n.name);
      if (n.type == repo::NodeType::symlink) put_name(j, "target", n.target);
      print_json(j);
    } else if (long_) {
      char tbuf[32];
      time_t sec = time_t(n.mtime_ns / 1000000000);
      std::tm tm{};
      gmtime_r(&sec, &tm);
      strftime(tbuf, sizeof tbuf, "%Y-%m-%d %H:%M:%S", &tm);
      std::printf("%-8s %04o %6u %6u %12llu %s %s%s\n", repo::node_type_name(n.type), n.mode, n.uid, n.gid, (unsigned long long)n.size,
                  tbuf, terminal_safe(path).c_str(), n.type == repo::NodeType::symlink ? (" -> " + terminal_safe(n.target)).c_str() : "");
    } else {
      std::printf("%s\n", terminal_safe(path).c_str());
    }
    return true;
  }

 private:
  bool json_, long_;
};
}  // namespace

void register_repo_ls(CLI::App& repo, Context& ctx) {
  static std::string snap;
  static bool long_fmt = false;
  static bool skip_damaged = false;
  static uint64_t max_entries = repo::kMaxWalkEntries;
  static std::string budget_option;
  auto* cmd = repo.add_subcommand("ls", "list the files of a snapshot");
  add_repo_options(cmd, ctx.opts);
  cmd->add_option("snapshot", snap, "snapshot id (or a unique prefix, or 'latest')")->required();
  cmd->add_flag("--long,-l", long_fmt, "show type, mode, owner, size and modification time");
  add_skip_damaged_option(cmd, skip_damaged);
  cmd->add_option("--max-entries", max_entries, "stop with an error past this many entries (a tree bomb's defence; default 50,000,000)");
  cmd->add_option("--memory-budget", budget_option,
                  "what the listing may hold, e.g. 128M: refused when the repository's index and largest tree need more");
  cmd->callback([&ctx] {
    ctx.action = [&ctx]() -> int {
      const auto& o = ctx.opts;
      auto budget = memory_budget(budget_option, repo::kOpenBytes, "opening a repository: the process and its key derivation");
      auto r = open_repo(o);
      check_memory_needs(budget, budget_option,
                         repo::repository_needs(r->index(), repo::MemoryUse::walk, repo::Repository::index_load_threads()));
      repo::Snapshot s = repo::load_snapshot(*r, resolve_snapshot_ref(*r, snap, skip_damaged));
      if (!o.json && !o.quiet)
        std::printf("snapshot %s of %s at %s:\n", terminal_safe(s.id.substr(0, 8)).c_str(), terminal_safe(s.hostname).c_str(),
                    terminal_safe(s.time).c_str());
      Lister lister(o.json, long_fmt);
      repo::walk_snapshot(*r, s, lister, {.max_entries = max_entries});
      return kExitOk;
    };
  });
}

}  // namespace cairn::ctl
