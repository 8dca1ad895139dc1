#include <ctime>

#include "cairnctl/cli.h"
#include "common/repo/snapshot.h"
#include "common/repo/tree.h"
#include "common/repo/walk.h"

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
      for (const auto& [id, why] : bad) warn("snapshot '" + id.substr(0, 8) + "' is unreadable: " + why);
      if (o.json) {
        nlohmann::json arr = nlohmann::json::array();
        for (const auto& s : snaps) arr.push_back(snapshot_json(s));
        print_json(arr);
        return bad.empty() ? kExitOk : kExitError;
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
        std::printf("%-8s  %-20s  %-16s  %-8s  %-10s  %s\n", s.id.substr(0, 8).c_str(), when.c_str(), s.hostname.substr(0, 16).c_str(),
                    s.partial ? "partial" : "ok", human_bytes(s.summary.value("bytes_total", uint64_t(0))).c_str(), paths.c_str());
      }
      std::printf("%zu snapshots\n", snaps.size());
      return bad.empty() ? kExitOk : kExitError;
    };
  });
}

namespace {
// Prints each entry as the walk reaches it: nothing accumulates, and the walk's
// bounds (depth, entries) end a tree bomb with a clear error.
class Lister : public repo::TreeVisitor {
 public:
  Lister(bool json, bool long_fmt) : json_(json), long_(long_fmt) {}
  bool enter(const std::string& path, repo::Node& n, size_t) override {
    if (json_) {
      nlohmann::json j = {{"path", path}, {"type", repo::node_type_name(n.type)}, {"mode", n.mode}, {"uid", n.uid},
                          {"gid", n.gid},   {"size", n.size},                     {"mtime_ns", n.mtime_ns}};
      if (n.type == repo::NodeType::symlink) j["target"] = n.target;
      print_json(j);
    } else if (long_) {
      char tbuf[32];
      time_t sec = time_t(n.mtime_ns / 1000000000);
      std::tm tm{};
      gmtime_r(&sec, &tm);
      strftime(tbuf, sizeof tbuf, "%Y-%m-%d %H:%M:%S", &tm);
      std::printf("%-8s %04o %6u %6u %12llu %s %s%s\n", repo::node_type_name(n.type), n.mode, n.uid, n.gid, (unsigned long long)n.size, tbuf,
                  path.c_str(), n.type == repo::NodeType::symlink ? (" -> " + n.target).c_str() : "");
    } else {
      std::printf("%s\n", path.c_str());
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
  static uint64_t max_entries = repo::kMaxWalkEntries;
  auto* cmd = repo.add_subcommand("ls", "list the files of a snapshot");
  add_repo_options(cmd, ctx.opts);
  cmd->add_option("snapshot", snap, "snapshot id (or a unique prefix, or 'latest')")->required();
  cmd->add_flag("--long,-l", long_fmt, "show type, mode, owner, size and modification time");
  cmd->add_option("--max-entries", max_entries, "stop with an error past this many entries (a tree bomb's defence; default 50,000,000)");
  cmd->callback([&ctx] {
    ctx.action = [&ctx]() -> int {
      const auto& o = ctx.opts;
      auto r = open_repo(o);
      repo::Snapshot s = repo::load_snapshot(*r, repo::resolve_snapshot(*r, snap));
      if (!o.json && !o.quiet) std::printf("snapshot %s of %s at %s:\n", s.id.substr(0, 8).c_str(), s.hostname.c_str(), s.time.c_str());
      Lister lister(o.json, long_fmt);
      repo::walk_snapshot(*r, s, lister, {.max_entries = max_entries});
      return kExitOk;
    };
  });
}

}  // namespace cairn::ctl
