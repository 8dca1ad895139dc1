#include "agent/restore_journal.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "agent/driver.h"
#include "agent/platform/service.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace cairn::agent {

InPlaceRestore in_place_restore(const TaskContext& ctx, std::string stamp, InPlaceRestore::State state) {
  InPlaceRestore r;
  r.component = ctx.component;
  r.restore_id = ctx.restore_id;
  r.task_id = ctx.task_id;
  r.plan_id = ctx.plan_id;
  r.stamp = std::move(stamp);
  r.state = state;
  return r;
}

std::string RestoreJournal::path_of(const std::string& component) const {
  // Component names are the config's; hex keeps any of them one file name.
  return dir_ + "/" + to_hex(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(component.data()), component.size())) + ".json";
}

// The one record format (restore_record.h): step "all" (a whole restore in
// place), the component as the member, the moves in the payload.
void RestoreJournal::write(const InPlaceRestore& r) const {
  json moves = json::array();
  for (const auto& m : r.moves) moves.push_back({{"path", m.path}, {"aside", m.aside}});
  StepRecord rec;
  rec.restore_id = r.restore_id;
  rec.task_id = r.task_id;
  rec.member = r.component;
  rec.step = cairn::v1::RESTORE_STEP_ALL;
  rec.payload = {{"plan_id", r.plan_id},
                 {"stamp", r.stamp},
                 {"phase", r.state == InPlaceRestore::State::swapping ? "swapping" : "stopping"},
                 {"moves", moves},
                 {"scratch", r.scratch}};
  try {
    mkdir_p(dir_, 0700);
    write_step_record(path_of(r.component), rec);
  } catch (const Error& e) {
    throw Error(e.code(), "cannot write the restore's record in '" + dir_ + "' (nothing was changed): " + e.what());
  }
}

std::string RestoreJournal::clear(const std::string& component) const {
  std::error_code ec;
  fs::remove(path_of(component), ec);
  return ec ? "cannot remove the restore's record '" + path_of(component) + "': " + ec.message() : "";
}

std::vector<InPlaceRestore> RestoreJournal::load(std::vector<std::string>* problems) const {
  std::vector<InPlaceRestore> out;
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const std::string p = e.path().string();
    if (e.path().extension() != ".json") continue;
    try {
      auto rec = read_step_record(p);
      if (!rec) continue;  // gone since the listing
      const json& j = rec->payload;
      // An older agent's record (every key at the top, the component named
      // "component", the phase as "state") reads as its payload.
      const bool older = j.contains("component");
      InPlaceRestore r;
      r.component = older ? j.at("component").get<std::string>() : rec->member;
      r.restore_id = older ? j.value("restore_id", "") : rec->restore_id;
      r.task_id = older ? j.at("task_id").get<std::string>() : rec->task_id;
      r.plan_id = j.value("plan_id", "");
      r.stamp = j.at("stamp").get<std::string>();
      r.state = j.value(older ? "legacy_state" : "phase", "stopping") == "swapping" ? InPlaceRestore::State::swapping
                                                                                    : InPlaceRestore::State::stopping;
      for (const auto& m : j.at("moves")) r.moves.push_back({m.at("path").get<std::string>(), m.at("aside").get<std::string>()});
      for (const auto& s : j.value("scratch", json::array())) r.scratch.push_back(s.get<std::string>());
      if (path_of(r.component) != p) throw Error(Errc::corrupt, "it names component '" + r.component + "', not its own");
      out.push_back(std::move(r));
    } catch (const std::exception& ex) {
      if (problems) problems->push_back("restore record '" + p + "' cannot be read (left as it is): " + ex.what());
    }
  }
  if (ec && problems) problems->push_back("cannot list '" + dir_ + "': " + ec.message());
  return out;
}

std::string put_back_moves(const InPlaceRestore& r) {
  std::string left;
  for (auto it = r.moves.rbegin(); it != r.moves.rend(); ++it) {
    std::error_code ec;
    const bool aside_there = !it->aside.empty() && fs::exists(fs::symlink_status(it->aside, ec));
    const bool path_there = fs::exists(fs::symlink_status(it->path, ec));
    // Nothing was there before and nothing is now, or the move never
    // happened: nothing to undo.
    if (it->aside.empty() ? !path_there : !aside_there) continue;
    if (path_there) {
      std::string failed = it->path + ".cairn-failed-" + r.stamp;
      for (int i = 2; fs::exists(fs::symlink_status(failed, ec)); ++i)
        failed = it->path + ".cairn-failed-" + r.stamp + "-" + std::to_string(i);
      fs::rename(it->path, failed, ec);
      if (ec) {
        left += " '" + it->path + "' (moving the restored copy aside: " + ec.message() + ")";
        continue;
      }
    }
    if (!it->aside.empty()) {
      fs::rename(it->aside, it->path, ec);
      if (ec) left += " '" + it->path + "' (putting '" + it->aside + "' back: " + ec.message() + ")";
    }
  }
  return left;
}

std::string remove_scratch(const InPlaceRestore& r) {
  std::string left;
  for (const auto& s : r.scratch) {
    std::error_code ec;
    fs::remove_all(s, ec);
    if (ec) left += " '" + s + "' (" + ec.message() + ")";
  }
  return left;
}

void JournalGuard::write() {
  if (!journal_) return;
  journal_->write(r_);
  written_ = true;
}

JournalGuard::~JournalGuard() {
  if (!journal_ || !written_ || keep_) return;
  if (auto why = journal_->clear(r_.component); !why.empty()) spdlog::error("component '{}': {}", r_.component, why);
}

std::string undo_around_service(const InPlaceRestore& r, const platform::Service& service, const std::string& server,
                                const std::string& data_dir, const std::function<bool()>& stopped_anyway) {
  try {
    service.stop();
  } catch (const Error& e) {
    if (!stopped_anyway()) throw Error(Errc::io, "stopping " + server + " failed (" + e.what() + "), so nothing was moved");
  }
  std::error_code ec;
  bool moved = false;
  for (const auto& m : r.moves)
    if (!m.aside.empty() && fs::exists(fs::symlink_status(m.aside, ec))) moved = true;
  if (std::string left = put_back_moves(r); !left.empty())
    throw Error(Errc::io, "could not put back:" + left + " (" + server + " is stopped)");
  std::string scratch_left = remove_scratch(r);
  try {
    service.start();
  } catch (const Error& e) {
    throw Error(Errc::io, "the previous data is back in '" + data_dir + "', but starting " + server + " on it failed: " + e.what());
  }
  return std::string(moved ? "the previous data is back in '" + data_dir + "' (the restored copy is in '" + data_dir + ".cairn-failed-" +
                                 r.stamp + "')"
                           : "nothing had been moved yet; '" + data_dir + "' holds its data as before") +
         " and " + server + " was started on it" +
         (scratch_left.empty() ? "" : "; could not remove the restore's scratch directories:" + scratch_left);
}

std::string roll_back_by_step(Driver& driver, const InPlaceRestore& r) {
  TaskContext ctx;  // the interrupted task's, as far as a rollback reads it
  ctx.component = r.component;
  ctx.restore_id = r.restore_id;
  ctx.task_id = r.task_id;
  ctx.plan_id = r.plan_id;
  std::vector<std::string> notes;
  ctx.note = [&notes](const std::string& text) { notes.push_back(text); };
  RestoreSpec spec;
  spec.step = v1::RESTORE_STEP_ROLLBACK;
  DriverResult res = driver.restore(ctx, spec);
  std::string said;
  for (const auto& n : notes) said += (said.empty() ? "" : "; ") + n;
  if (res.metadata.is_object())
    for (const char* k : {"note", "failed_data_dir", "restored_data_dir"})
      if (res.metadata.contains(k) && res.metadata[k].is_string())
        said += (said.empty() ? "" : "; ") + std::string(k) + ": " + res.metadata[k].get<std::string>();
  if (res.outcome != cairn::v1::TASK_OUTCOME_SUCCEEDED) {
    std::string why;
    for (const auto& reason : res.reasons) why += (why.empty() ? "" : "; ") + reason.detail();
    throw Error(Errc::io, "its rollback step failed: " + (why.empty() ? std::string("no reason given") : why));
  }
  return "its rollback step ran and " + driver.name() + " was started again" + (said.empty() ? "" : " (" + said + ")");
}

std::vector<cairn::v1::TaskResult> recover_in_place_restores(const RestoreJournal& journal,
                                                             const std::function<Driver*(const std::string&)>& driver_of) {
  std::vector<std::string> problems;
  auto records = journal.load(&problems);
  for (const auto& p : problems) spdlog::error("{}", p);
  std::vector<cairn::v1::TaskResult> out;
  for (const auto& r : records) {
    cairn::v1::TaskResult res;
    res.set_plan_id(r.plan_id);
    res.set_task_id(r.task_id);
    res.set_outcome(cairn::v1::TASK_OUTCOME_FAILED);
    const auto now = static_cast<uint64_t>(std::time(nullptr));
    res.set_started_at(now);
    res.set_finished_at(now);
    const std::string what =
        "the agent stopped during this restore (killed, crashed or its host restarted) after it had " +
        std::string(r.state == InPlaceRestore::State::swapping ? "begun to replace the data" : "begun to stop the service");
    auto* why = res.add_reasons();
    try {
      Driver* d = driver_of(r.component);
      if (!d) throw Error(Errc::not_found, "component '" + r.component + "' is no longer declared in the agent's configuration");
      std::string done = d->recover_interrupted_restore(r);
      why->set_code(cairn::v1::ERROR_CODE_AGENT_LOST);
      why->set_detail(what + "; at its next start it put the previous data back: " + done);
      spdlog::warn("component '{}': restore task '{}' was interrupted; {}", r.component, r.task_id, done);
      if (auto e = journal.clear(r.component); !e.empty()) spdlog::error("component '{}': {}", r.component, e);
    } catch (const std::exception& e) {
      why->set_code(cairn::v1::ERROR_CODE_SERVICE_CONTROL_FAILED);
      why->set_detail(what + "; at its next start it could not put the previous data back (" + e.what() + "); its record is kept in '" +
                      journal.dir() + "' and the agent's next start tries again; " + "docs/protocol.md says how to put it back by hand");
      spdlog::error("component '{}': restore task '{}' was interrupted and is not put right yet: {}", r.component, r.task_id, e.what());
    }
    // What the controller looks for to add this account to a task it ended as lost.
    res.set_component_metadata(json({{"interrupted_restore", {{"restore_id", r.restore_id}, {"stamp", r.stamp}}}}).dump());
    out.push_back(std::move(res));
  }
  return out;
}

}  // namespace cairn::agent
