// Signed set records (set_record.h).
#include "controller/set_record.h"

#include <spdlog/spdlog.h>

#include "common/plan/envelope.h"
#include "common/repo/keys.h"
#include "common/repo/repository.h"
#include "common/repo/storage/backend.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "controller/catalog/outcome.h"
#include "controller/catalog/tx.h"
#include "controller/maintenance.h"

namespace cairn::controller {
namespace {

std::string str(const nlohmann::json& j, const char* k) {
  auto it = j.find(k);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

int64_t num(const nlohmann::json& j, const char* k) {
  auto it = j.find(k);
  return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

}  // namespace

std::string set_record_body(const SetRecord& r) {
  nlohmann::json tasks = nlohmann::json::array();
  for (const auto& t : r.tasks) {
    nlohmann::json j = {{"id", t.id},
                        {"agent", t.agent_name},
                        {"agent_key", t.agent_key},
                        {"component", t.component},
                        {"repository", t.repository},
                        {"snapshot", t.snapshot_id},
                        {"cluster", t.cluster_id},
                        {"state", t.state}};
    if (!t.members.empty()) j["members"] = t.members;
    if (!t.copies.empty()) {
      j["copies"] = nlohmann::json::array();
      for (const auto& [repository, snapshot] : t.copies) j["copies"].push_back({{"repository", repository}, {"snapshot", snapshot}});
    }
    tasks.push_back(std::move(j));
  }
  nlohmann::json j = {{"format", "cairn-set-record-v1"},
                      {"set", r.set_id},
                      {"created_at", r.created_at},
                      {"finished_at", r.finished_at},
                      {"signed_at", r.signed_at},
                      {"state", r.state},
                      {"trigger", r.trigger},
                      {"policy", r.policy},
                      {"tasks", tasks}};
  return j.dump();
}

nlohmann::json sign_set_record(const SetRecord& r, const plan::SigningKey& key) {
  std::string body = set_record_body(r);
  auto sig = key.sign(plan::pae(kSetRecordType, as_bytes(body)));
  return {{"body", body},
          {"key_id", key.key_id()},
          {"public_key", plan::format_public_key(key.public_key())},
          {"signature", to_base64(std::span<const uint8_t>(sig.data(), sig.size()))}};
}

// The body, once its signature verified (or read unverified, said so by the caller).
static std::optional<SetRecord> parse_set_record_body(const std::string& body, std::string& why) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (!j.is_object() || str(j, "format") != "cairn-set-record-v1" || str(j, "set").empty() || !j.contains("tasks") ||
      !j["tasks"].is_array()) {
    why = "its body is not a cairn-set-record-v1";
    return std::nullopt;
  }
  SetRecord r;
  r.set_id = str(j, "set");
  r.created_at = num(j, "created_at");
  r.finished_at = num(j, "finished_at");
  r.signed_at = num(j, "signed_at");
  r.state = str(j, "state");
  r.trigger = str(j, "trigger");
  r.policy = str(j, "policy");
  for (const auto& t : j["tasks"]) {
    if (!t.is_object()) continue;
    r.tasks.push_back({str(t, "id"), str(t, "agent"), str(t, "agent_key"), str(t, "component"), str(t, "repository"), str(t, "snapshot"),
                       str(t, "cluster"), str(t, "state")});
    if (auto c = t.find("copies"); c != t.end() && c->is_array())
      for (const auto& x : *c)
        if (x.is_object() && !str(x, "repository").empty() && !str(x, "snapshot").empty())
          r.tasks.back().copies.emplace_back(str(x, "repository"), str(x, "snapshot"));
    if (auto m = t.find("members"); m != t.end() && m->is_array())
      for (const auto& x : *m)
        if (x.is_string() && !x.get<std::string>().empty()) r.tasks.back().members.push_back(x.get<std::string>());
  }
  return r;
}

std::optional<SetRecord> read_set_record_unverified(const nlohmann::json& file, std::string& why) {
  if (!file.is_object() || !file.contains("body") || !file["body"].is_string()) {
    why = "it is not a set record (no body)";
    return std::nullopt;
  }
  return parse_set_record_body(file["body"].get<std::string>(), why);
}

std::optional<SetRecord> verify_set_record(const nlohmann::json& file,
                                           const std::function<const plan::PublicKey*(const std::string&)>& trusted, std::string& why) {
  if (!file.is_object() || !file.contains("body") || !file["body"].is_string()) {
    why = "it is not a set record (no body)";
    return std::nullopt;
  }
  std::string key_id = str(file, "key_id");
  const plan::PublicKey* pub = trusted(key_id);
  if (!pub) {
    why = "it is signed by key '" + key_id +
          "', which is not a controller key trusted here (the controller's own keys, and those given with --trusted-key)";
    return std::nullopt;
  }
  Bytes sig;
  const std::string body = file["body"].get<std::string>();
  if (!from_base64(str(file, "signature"), sig) || !plan::verify_signature(*pub, plan::pae(kSetRecordType, as_bytes(body)), sig)) {
    why = "its signature does not verify under controller key '" + key_id + "'";
    return std::nullopt;
  }
  return parse_set_record_body(body, why);
}

SetRecord record_from_catalog(const catalog::Tx& tx, const catalog::BackupSet& set, int64_t now) {
  SetRecord r;
  r.set_id = set.id;
  r.created_at = set.created_at;
  r.finished_at = set.finished_at.value_or(0);
  r.signed_at = now;
  r.state = std::string(catalog::to_string(set.state));
  r.trigger = set.trigger;
  r.policy = set.policy.value_or("");
  for (const auto& t : tx.tasks_of_set(set.id)) {
    SetRecord::Task rt;
    rt.id = t.id;
    rt.component = t.component;
    rt.repository = t.repository;
    rt.snapshot_id = t.snapshot_id.value_or("");
    rt.cluster_id = t.cluster_id;
    if (!t.cluster_id.empty()) rt.members = tx.task_cluster_members(t.id);
    rt.state = std::string(catalog::to_string(t.state));
    for (const auto& c : tx.set_copies(set.id)) {
      if (c.state != "copied" || c.removed_at) continue;
      auto copies = tx.task_copies(set.id, c.repository);
      if (auto it = copies.find(t.id); it != copies.end()) rt.copies.emplace_back(c.repository, it->second);
    }
    if (auto a = tx.agent(t.agent_id)) {
      rt.agent_name = a->name;
      rt.agent_key = to_hex(std::span<const uint8_t>(a->curve_public_key));
    }
    r.tasks.push_back(std::move(rt));
  }
  return r;
}

// ---- the writer ----------------------------------------------------------

SetRecordWriter::SetRecordWriter(const ControllerConfig& config) : config_(config), worker_([this](const Job& j) { return run(j); }) {}

SetRecordWriter::~SetRecordWriter() = default;

repo::Repository& SetRecordWriter::open(const ControllerConfig::Repository& r) {
  auto it = open_.find(r.name);
  if (it != open_.end()) return *it->second;
  return *(open_[r.name] = open_controller_repository(r));
}

SetRecordWriter::Result SetRecordWriter::run(const Job& job) {
  Result res;
  for (const auto& name : job.repositories) {
    try {
      const ControllerConfig::Repository* decl = config_.repository(name);
      if (!decl) throw Error(Errc::not_found, "repository '" + name + "' is not declared in the controller's configuration");
      open(*decl).save_json(repo::FileType::set_record, job.file);
      res.written.push_back(name);
    } catch (const std::exception& e) {
      open_.erase(name);  // opened again next time (a password file changed, a disk remounted)
      res.errors[name] = e.what();
    }
  }
  res.job = job;
  return res;
}

size_t remove_set_records(repo::Repository& r, const std::set<std::string>& set_ids) {
  size_t removed = 0;
  for (const auto& name : r.list(repo::FileType::set_record)) {
    try {
      auto file = r.load_json(repo::FileType::set_record, name);
      if (!file.is_object() || !file.contains("body") || !file["body"].is_string()) continue;
      auto body = nlohmann::json::parse(file["body"].get<std::string>(), nullptr, false);
      if (!body.is_object() || !set_ids.count(body.value("set", ""))) continue;
      r.backend().remove({repo::FileType::set_record, name});
      ++removed;
    } catch (const std::exception&) {
      // unreadable: left for check to report
    }
  }
  return removed;
}

}  // namespace cairn::controller
