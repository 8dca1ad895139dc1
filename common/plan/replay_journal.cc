#include "common/plan/replay_journal.h"

#include <sys/stat.h>

#include <cerrno>
#include <nlohmann/json.hpp>

#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::plan {
namespace {

constexpr std::string_view kFormat = "cairn-replay-journal";
constexpr int kVersion = 1;

[[noreturn]] void corrupt(const std::string& path, const std::string& why) {
  throw Error(Errc::corrupt, "replay journal '" + path + "' is unreadable (" + why +
                                 "); the agent refuses plans until it is restored from a backup or "
                                 "removed by an operator who accepts that unexpired plans could be replayed");
}

}  // namespace

ReplayJournal ReplayJournal::open(const std::string& path) {
  ReplayJournal j;
  j.path_ = path;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return j;
    throw_errno("cannot read replay journal", path, errno);
  }
  Bytes raw = read_file(path);
  nlohmann::json doc = nlohmann::json::parse(raw.begin(), raw.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) corrupt(path, "not json");
  try {
    if (doc.at("format").get<std::string>() != kFormat) corrupt(path, "wrong format name");
    if (doc.at("version").get<int>() != kVersion)
      throw Error(Errc::unsupported,
                  "replay journal '" + path + "' has version " + std::to_string(doc.at("version").get<int>()) + "; upgrade cairn-agent");
    for (const auto& [controller, seq] : doc.at("sequences").items()) j.sequences_[controller] = seq.get<uint64_t>();
    for (const auto& p : doc.at("plans")) {
      Bytes nonce;
      if (!from_hex(p.at("nonce").get<std::string>(), nonce)) corrupt(path, "bad nonce");
      Entry e{std::string(nonce.begin(), nonce.end()), p.at("expires_at").get<int64_t>()};
      j.nonces_[e.nonce] = e.expires_at;
      j.plans_[p.at("plan_id").get<std::string>()] = std::move(e);
    }
  } catch (const nlohmann::json::exception& e) {
    corrupt(path, e.what());
  }
  return j;
}

uint64_t ReplayJournal::highest_sequence(const std::string& controller_id) const {
  auto it = sequences_.find(controller_id);
  return it == sequences_.end() ? 0 : it->second;
}

void ReplayJournal::drop_expired(int64_t now) {
  std::erase_if(plans_, [&](const auto& kv) { return kv.second.expires_at <= now; });
  std::erase_if(nonces_, [&](const auto& kv) { return kv.second <= now; });
}

void ReplayJournal::record(const cairn::v1::PlanPayload& plan, int64_t now) {
  // Change a copy and swap it in only after it is on disk.
  ReplayJournal next = *this;
  next.drop_expired(now);
  uint64_t& seq = next.sequences_[plan.controller_id()];
  seq = std::max(seq, plan.sequence());
  next.plans_[plan.plan_id()] = Entry{plan.nonce(), plan.expires_at()};
  next.nonces_[plan.nonce()] = plan.expires_at();
  next.save();
  *this = std::move(next);
}

void ReplayJournal::prune(int64_t now) {
  size_t before = plans_.size() + nonces_.size();
  ReplayJournal next = *this;
  next.drop_expired(now);
  if (next.plans_.size() + next.nonces_.size() == before) return;
  next.save();
  *this = std::move(next);
}

void ReplayJournal::save() const {
  if (path_.empty()) return;
  nlohmann::json doc;
  doc["format"] = kFormat;
  doc["version"] = kVersion;
  doc["sequences"] = nlohmann::json::object();
  for (const auto& [c, s] : sequences_) doc["sequences"][c] = s;
  doc["plans"] = nlohmann::json::array();
  for (const auto& [id, e] : plans_)
    doc["plans"].push_back({{"plan_id", id}, {"nonce", to_hex(as_bytes(e.nonce))}, {"expires_at", e.expires_at}});
  std::string text = doc.dump(1) + "\n";
  write_file_atomic(path_, as_bytes(text), 0600);
}

}  // namespace cairn::plan
