#include "agent/restore_record.h"

#include <unistd.h>

#include <cerrno>
#include <span>

#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "proto/restore_step.h"

namespace cairn::agent {

namespace {

constexpr int kFormat = 1;
constexpr size_t kMaxRecord = 1 << 20;

std::string dir_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

void write_step_record(const std::string& path, const StepRecord& r) {
  nlohmann::json j = {{"format", kFormat},
                      {"restore_id", r.restore_id},
                      {"task_id", r.task_id},
                      {"member", r.member},
                      {"step", proto::restore_step_name(r.step)},
                      {"state", r.rolled_back ? "rolled_back" : "data"},
                      {"time", utc_stamp()},
                      {"payload", r.payload.is_object() ? r.payload : nlohmann::json::object()}};
  std::string text = j.dump(2) + "\n";
  write_file_atomic(path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()), 0600);
}

std::optional<StepRecord> read_step_record(const std::string& path) {
  if (::access(path.c_str(), F_OK) != 0) return std::nullopt;
  nlohmann::json j;
  try {
    Bytes b = read_file(path, kMaxRecord);
    j = nlohmann::json::parse(std::string(b.begin(), b.end()));
  } catch (const std::exception& e) {
    throw Error(Errc::corrupt, "the restore record '" + path + "' cannot be read: " + e.what());
  }
  if (!j.is_object()) throw Error(Errc::corrupt, "the restore record '" + path + "' is not a JSON object");
  StepRecord r;
  try {
    if (j.contains("format")) {
      if (!j["format"].is_number_integer() || j["format"].get<int>() != kFormat)
        throw Error(Errc::unsupported, "format " + j["format"].dump() + " is not one this agent reads");
      r.restore_id = j.at("restore_id").get<std::string>();
      r.task_id = j.value("task_id", "");
      r.member = j.value("member", "");
      auto step = proto::restore_step_from_name(j.value("step", "data"));
      if (!step) throw Error(Errc::unsupported, "it names step '" + j.value("step", "") + "'");
      r.step = *step;
      r.rolled_back = j.value("state", "data") == "rolled_back";
      r.payload = j.value("payload", nlohmann::json::object());
      if (!r.payload.is_object()) throw Error(Errc::corrupt, "its payload is not a JSON object");
    } else {
      // An older agent's record: everything at the top, the restore as "restore".
      r.restore_id = j.value("restore", "");
      r.member = j.value("member", "");
      r.rolled_back = j.value("state", "data") == "rolled_back";
      // An in-place restore's phase ("stopping", "swapping") stays readable.
      if (j.contains("state") && j["state"].is_string() && j["state"] != "data" && j["state"] != "rolled_back")
        j["legacy_state"] = j["state"];
      for (const char* k : {"restore", "member", "state", "step", "time"}) j.erase(k);
      r.payload = std::move(j);
    }
  } catch (const Error& e) {
    throw Error(Errc::corrupt, "the restore record '" + path + "' cannot be read: " + e.what());
  } catch (const std::exception& e) {
    throw Error(Errc::corrupt, "the restore record '" + path + "' cannot be read: " + e.what());
  }
  return r;
}

void remove_step_record(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) throw_errno("remove the restore's record", path, errno);
  fsync_dir(dir_of(path));
}

}  // namespace cairn::agent
