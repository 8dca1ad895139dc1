#include "agent/set_aside.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "agent/driver.h"
#include "agent/restore_journal.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "common/util/terminal_text.h"

namespace cairn::agent {

namespace fs = std::filesystem;

namespace {

// The ledger is the agent's own file; still bounded (docs/set-aside.md).
constexpr size_t kMaxLedger = 4u << 20;
constexpr size_t kMaxCopiesReported = 256;

struct Suffix {
  const char* text;
  AsideCopy::Kind kind;
};
constexpr Suffix kSuffixes[] = {
    {".cairn-old-", AsideCopy::Kind::old}, {".cairn-failed-", AsideCopy::Kind::failed}, {".cairn-restore-", AsideCopy::Kind::work}};

std::string clean(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

// Regular files below dir, each inode once; links are not followed.
uint64_t tree_bytes(const std::string& path, bool is_dir, uint64_t file_size) {
  if (!is_dir) return file_size;
  uint64_t total = 0;
  std::set<std::pair<dev_t, ino_t>> seen;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(path, fs::directory_options::skip_permission_denied, ec), end; !ec && it != end;
       it.increment(ec)) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (st.st_nlink > 1 && !seen.insert({st.st_dev, st.st_ino}).second) continue;
    total += uint64_t(st.st_size);
  }
  return total;
}

// The restore a driver's record names, or "" for a tombstone or none.
// nullopt: there is a record that cannot be read (the component is busy).
std::optional<std::string> record_restore(const std::string& file) {
  struct stat st {};
  if (::lstat(file.c_str(), &st) != 0) return std::string();
  try {
    auto rec = read_step_record(file);  // the one format (restore_record.h), or an older agent's
    if (!rec) return std::string();
    if (rec->restore_id.empty()) return std::nullopt;
    // etcd keeps a rolled-back restore's record as a tombstone: that restore ended.
    if (rec->rolled_back) return std::string();
    return rec->restore_id;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace

const char* kind_name(AsideCopy::Kind k) {
  switch (k) {
    case AsideCopy::Kind::old:
      return "old";
    case AsideCopy::Kind::failed:
      return "failed";
    case AsideCopy::Kind::work:
      return "work";
  }
  return "?";
}

std::vector<AsideCopy> find_set_aside(const std::string& component, const std::vector<std::string>& paths) {
  std::vector<AsideCopy> out;
  std::set<std::string> done;
  for (std::string p : paths) {
    p = clean(p);
    const fs::path fp(p);
    const std::string base = fp.filename().string();
    if (p.empty() || p[0] != '/' || base.empty() || base == "." || base == ".." || !done.insert(p).second) continue;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(fp.parent_path(), ec)) {
      const std::string name = e.path().filename().string();
      for (const auto& s : kSuffixes) {
        const std::string prefix = base + s.text;
        if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
        struct stat st {};
        // Only what a restore made: a directory or a file, never a link.
        if (::lstat(e.path().c_str(), &st) != 0 || !(S_ISDIR(st.st_mode) || S_ISREG(st.st_mode))) break;
        AsideCopy c;
        c.component = component;
        c.data_path = p;
        c.path = e.path().string();
        c.kind = s.kind;
        c.at = st.st_mtime;
        c.bytes = tree_bytes(c.path, S_ISDIR(st.st_mode), uint64_t(st.st_size));
        out.push_back(std::move(c));
        break;
      }
    }
  }
  std::sort(out.begin(), out.end(), [](const AsideCopy& a, const AsideCopy& b) { return a.path < b.path; });
  return out;
}

void decide(std::vector<AsideCopy>& copies, const SetAsideRule& rule, int64_t now, const std::set<std::string>& restores_on_record,
            bool busy, const SnapshotCheck& held) {
  std::map<std::string, std::vector<AsideCopy*>> by_path;
  for (auto& c : copies) {
    c.keep.clear();
    if (c.kind == AsideCopy::Kind::work) {
      if (busy) c.keep = "in-progress";
      continue;
    }
    by_path[c.data_path].push_back(&c);
  }
  for (auto& [path, list] : by_path) {
    std::sort(list.begin(), list.end(),
              [](const AsideCopy* a, const AsideCopy* b) { return a->at != b->at ? a->at > b->at : a->path > b->path; });
    for (size_t i = 0; i < list.size(); ++i) {
      AsideCopy& c = *list[i];
      // "*": a record that names no restore or cannot be read: nothing of the component goes.
      if (restores_on_record.count("*") || (!c.restore_id.empty() && restores_on_record.count(c.restore_id)))
        c.keep = "in-progress";
      else if (!c.recorded)
        c.keep = "unrecorded";
      else if (c.held_by.empty())
        c.keep = "only-copy";
      else if (i < rule.keep_last)
        c.keep = "newest";
      else if (now - c.at < rule.keep_seconds)
        c.keep = "young";
      else {
        // The rule would remove it: only when the repository is known to hold its data now.
        std::optional<bool> there = held ? held(c.component, c.held_by) : std::nullopt;
        if (!there || !*there) c.keep = "only-copy";
      }
    }
  }
}

SetAsideKeeper::SetAsideKeeper(std::string ledger_path, SetAsideRule rule, std::vector<Component> components, const RestoreJournal* journal)
    : ledger_path_(std::move(ledger_path)), rule_(rule), components_(std::move(components)), journal_(journal) {
  load();
}

void SetAsideKeeper::load() {
  restores_.clear();
  copies_.clear();
  struct stat st {};
  if (ledger_path_.empty() || ::stat(ledger_path_.c_str(), &st) != 0) return;
  try {
    Bytes b = read_file(ledger_path_, kMaxLedger);
    auto j = nlohmann::json::parse(std::string(b.begin(), b.end()));
    for (const auto& [id, r] : j.at("restores").items())
      restores_[id] = {r.value("component", ""), r.value("safety", ""), r.value("restored", ""), r.value("at", int64_t(0))};
    for (const auto& [path, c] : j.at("copies").items()) copies_[path] = {c.value("restore", ""), c.value("at", int64_t(0))};
  } catch (const std::exception& e) {
    // Unreadable: every copy on disk is unrecorded (kept) from now on; the file is set aside for a look.
    spdlog::error(
        "set-aside ledger '{}' cannot be read ({}); it is kept as '{}.unusable' and the copies on disk are "
        "kept until removed by hand",
        ledger_path_, e.what(), ledger_path_);
    std::error_code ec;
    fs::rename(ledger_path_, ledger_path_ + ".unusable", ec);
    restores_.clear();
    copies_.clear();
  }
}

void SetAsideKeeper::save() const {
  if (ledger_path_.empty()) return;
  nlohmann::json j = {{"restores", nlohmann::json::object()}, {"copies", nlohmann::json::object()}};
  for (const auto& [id, r] : restores_)
    j["restores"][id] = {{"component", r.component}, {"safety", r.safety}, {"restored", r.restored}, {"at", r.at}};
  for (const auto& [path, c] : copies_) j["copies"][path] = {{"restore", c.first}, {"at", c.second}};
  try {
    const std::string text = j.dump(1);
    mkdir_p(fs::path(ledger_path_).parent_path().string(), 0700);
    write_file_atomic(ledger_path_, as_bytes(text), 0600);
  } catch (const std::exception& e) {
    spdlog::error("set-aside ledger '{}' cannot be written: {}", ledger_path_, e.what());
  }
}

std::vector<AsideCopy> SetAsideKeeper::scan(const Component& c, std::set<std::string>* on_record, bool* busy) {
  auto copies = find_set_aside(c.name, c.driver->set_aside_paths());
  *busy = false;
  if (journal_)
    for (const auto& r : journal_->load(nullptr))
      if (r.component == c.name) {
        *busy = true;
        on_record->insert(r.restore_id.empty() ? "*" : r.restore_id);
      }
  for (const auto& f : c.driver->restore_record_files()) {
    auto id = record_restore(f);
    if (!id) {
      *busy = true;
      on_record->insert("*");
    } else if (!id->empty()) {
      *busy = true;
      on_record->insert(*id);
    }
  }
  for (auto& cp : copies) {
    auto it = copies_.find(cp.path);
    if (it == copies_.end()) continue;
    cp.recorded = !it->second.first.empty();
    if (cp.recorded) cp.restore_id = it->second.first;
    if (it->second.second) cp.at = it->second.second;
    auto r = restores_.find(cp.restore_id);
    if (r != restores_.end()) cp.held_by = cp.kind == AsideCopy::Kind::failed ? r->second.restored : r->second.safety;
  }
  return copies;
}

std::vector<std::string> SetAsideKeeper::apply(const Component& c) {
  std::set<std::string> on_record;
  bool busy = false;
  auto copies = scan(c, &on_record, &busy);
  decide(copies, rule_, std::time(nullptr), on_record, busy, held_);
  std::vector<std::string> lines;
  std::vector<AsideCopy> left;
  for (auto& cp : copies) {
    if (!cp.keep.empty()) {
      left.push_back(cp);
      continue;
    }
    std::error_code ec;
    fs::remove_all(cp.path, ec);
    if (ec) {
      cp.keep = "not-removable";
      left.push_back(cp);
      lines.push_back("could not remove '" + cp.path + "': " + ec.message());
      continue;
    }
    copies_.erase(cp.path);
    lines.push_back("removed '" + cp.path + "' (" + kind_name(cp.kind) + ", " + std::to_string(cp.bytes) + " bytes" +
                    (cp.restore_id.empty() ? "" : ", restore '" + cp.restore_id + "'") + ")");
  }
  {
    std::lock_guard g(report_mu_);
    last_[c.name] = left;
  }
  return lines;
}

void SetAsideKeeper::publish() {
  // Ledger entries of copies no longer on disk go; a restore stays while a copy names it or for a week.
  std::set<std::string> on_disk, named;
  {
    std::lock_guard g(report_mu_);
    for (const auto& [_, list] : last_)
      for (const auto& c : list) on_disk.insert(c.path);
  }
  for (auto it = copies_.begin(); it != copies_.end();) {
    if (!on_disk.count(it->first))
      it = copies_.erase(it);
    else
      named.insert((it++)->second.first);
  }
  const int64_t now = std::time(nullptr);
  for (auto it = restores_.begin(); it != restores_.end();)
    if (!named.count(it->first) && now - it->second.at > 7 * 86400)
      it = restores_.erase(it);
    else
      ++it;
  save();
}

std::vector<std::string> SetAsideKeeper::after_restore(const std::string& component, const std::string& restore_id, bool took_safety,
                                                       const std::string& safety_snapshot, const std::string& restored_snapshot) {
  std::lock_guard lock(mu_);
  const int64_t now = std::time(nullptr);
  if (!restore_id.empty()) {
    auto [it, fresh] = restores_.try_emplace(restore_id, RestoreEntry{component, "", "", now});
    if (took_safety && (fresh || it->second.safety.empty())) it->second.safety = safety_snapshot;
    if (!restored_snapshot.empty()) it->second.restored = restored_snapshot;
  }
  std::vector<std::string> lines;
  for (const auto& c : components_) {
    if (c.name != component) continue;
    // What appeared beside the paths since the last look is this restore's.
    for (const auto& cp : find_set_aside(c.name, c.driver->set_aside_paths()))
      if (cp.kind != AsideCopy::Kind::work && !copies_.count(cp.path)) copies_[cp.path] = {restore_id, now};
    lines = apply(c);
  }
  publish();
  return lines;
}

std::vector<std::string> SetAsideKeeper::sweep() {
  std::lock_guard lock(mu_);
  std::vector<std::string> lines;
  for (const auto& c : components_) {
    std::set<std::string> on_record;
    bool busy = false;
    for (const auto& cp : scan(c, &on_record, &busy))
      if (cp.kind != AsideCopy::Kind::work && !copies_.count(cp.path)) copies_[cp.path] = {std::string(), 0};
    auto l = apply(c);
    lines.insert(lines.end(), l.begin(), l.end());
  }
  publish();
  return lines;
}

std::vector<AsideCopy> SetAsideKeeper::list() {
  std::lock_guard lock(mu_);
  std::vector<AsideCopy> out;
  for (const auto& c : components_) {
    std::set<std::string> on_record;
    bool busy = false;
    auto copies = scan(c, &on_record, &busy);
    decide(copies, rule_, std::time(nullptr), on_record, busy, held_);
    out.insert(out.end(), copies.begin(), copies.end());
  }
  return out;
}

std::vector<std::string> SetAsideKeeper::remove(const std::string& path, bool force, bool* failed) {
  std::lock_guard lock(mu_);
  *failed = false;
  std::vector<std::string> lines;
  bool matched = false;
  for (const auto& c : components_) {
    std::set<std::string> on_record;
    bool busy = false;
    auto copies = scan(c, &on_record, &busy);
    decide(copies, rule_, std::time(nullptr), on_record, busy, held_);
    for (auto& cp : copies) {
      if (!path.empty() && cp.path != clean(path)) continue;
      matched = true;
      if (cp.keep == "in-progress") {
        *failed = true;
        lines.push_back("kept '" + cp.path + "': restore '" + cp.restore_id +
                        "' is still on record (in progress, or not rolled back nor committed); it is never removed by hand");
        continue;
      }
      if ((cp.keep == "only-copy" || cp.keep == "unrecorded") && !force) {
        *failed = true;
        lines.push_back("kept '" + cp.path + "': " +
                        (cp.keep == "only-copy" ? std::string("the repository does not hold its data (the restore's "
                                                              "safety backup was skipped, empty or is gone)")
                                                : std::string("no restore this agent recorded made it, so nothing says "
                                                              "the repository holds its data")) +
                        "; add --force to remove it anyway");
        continue;
      }
      std::error_code ec;
      fs::remove_all(cp.path, ec);
      if (ec) {
        *failed = true;
        lines.push_back("could not remove '" + cp.path + "': " + ec.message());
        continue;
      }
      copies_.erase(cp.path);
      lines.push_back("removed '" + cp.path + "' (" + std::to_string(cp.bytes) + " bytes)");
    }
  }
  if (!path.empty() && !matched) {
    *failed = true;
    lines.push_back("'" + path +
                    "' is not a copy a restore set aside beside a declared path (see --set-aside list); "
                    "nothing was removed");
  }
  save();
  return lines;
}

void SetAsideKeeper::report(cairn::v1::Heartbeat& hb) const {
  std::lock_guard g(report_mu_);
  hb.set_set_aside_reported(true);
  size_t n = 0;
  for (const auto& [_, list] : last_)
    for (const auto& c : list) {
      if (n++ >= kMaxCopiesReported) return;
      auto* e = hb.add_set_aside();
      e->set_component(c.component);
      e->set_data_path(utf8_or_escaped(c.data_path));
      e->set_path(utf8_or_escaped(c.path));
      e->set_kind(kind_name(c.kind));
      e->set_bytes(c.bytes);
      e->set_at(c.at);
      e->set_restore_id(c.restore_id);
      e->set_held_by(c.held_by);
      e->set_keep(c.keep);
    }
}

}  // namespace cairn::agent
