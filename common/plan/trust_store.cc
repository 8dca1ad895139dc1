#include "common/plan/trust_store.h"

#include <sys/stat.h>

#include <cerrno>
#include <nlohmann/json.hpp>

#include "common/plan/envelope.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "proto/cairn.pb.h"
#include "proto/protocol.h"

namespace cairn::plan {
namespace {

constexpr std::string_view kFormat = "cairn-trusted-keys";
constexpr int kVersion = 1;

[[noreturn]] void corrupt(const std::string& path, const std::string& why) {
  throw Error(Errc::corrupt, "trusted key file '" + path + "' is unreadable (" + why + "); restore it from a backup or re-enrol the agent");
}

}  // namespace

TrustStore TrustStore::open(const std::string& path) {
  TrustStore store;
  store.path_ = path;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return store;
    throw_errno("cannot read trusted key file", path, errno);
  }
  Bytes raw = read_file(path);
  nlohmann::json j = nlohmann::json::parse(raw.begin(), raw.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) corrupt(path, "not json");
  try {
    if (j.at("format").get<std::string>() != kFormat) corrupt(path, "wrong format name");
    if (j.at("version").get<int>() != kVersion)
      throw Error(Errc::unsupported,
                  "trusted key file '" + path + "' has version " + std::to_string(j.at("version").get<int>()) + "; upgrade cairn-agent");
    for (const auto& k : j.at("keys")) {
      TrustedKey key;
      if (!parse_public_key(k.at("public_key").get<std::string>(), key.public_key)) corrupt(path, "bad public key");
      key.key_id = plan::key_id(key.public_key);
      key.added_at = k.at("added_at").get<int64_t>();
      key.source = k.at("source").get<std::string>();
      store.keys_[key.key_id] = std::move(key);
    }
    for (const auto& r : j.at("retired")) store.retired_.insert(r.get<std::string>());
  } catch (const nlohmann::json::exception& e) {
    corrupt(path, e.what());
  }
  return store;
}

bool TrustStore::add(const PublicKey& pub, int64_t now, const std::string& source) {
  std::string id = key_id(pub);
  if (retired_.count(id)) return false;
  if (!keys_.count(id)) keys_[id] = TrustedKey{id, pub, now, source};
  return true;
}

const TrustedKey* TrustStore::find(const std::string& key_id) const {
  auto it = keys_.find(key_id);
  return it == keys_.end() ? nullptr : &it->second;
}

std::vector<std::string> TrustStore::key_ids() const {
  std::vector<std::string> out;
  for (const auto& [id, _] : keys_) out.push_back(id);
  return out;
}

Verdict<KeyChange> TrustStore::apply_announcement(std::span<const uint8_t> envelope, int64_t now) {
  using V = Verdict<KeyChange>;
  auto opened = open_envelope(envelope, *this, proto::kKeyAnnouncementPayloadType);
  if (!opened) return V::reject(opened);
  cairn::v1::KeyAnnouncement ann;
  if (!ann.ParseFromArray(opened->payload.data(), int(opened->payload.size())))
    return V::reject(cairn::v1::ERROR_CODE_MALFORMED_PAYLOAD, "key announcement does not parse");
  PublicKey pub{};
  if (ann.announcement_id().empty() || ann.new_public_key().size() != pub.size() || ann.expires_at() <= ann.issued_at())
    return V::reject(cairn::v1::ERROR_CODE_MALFORMED_PAYLOAD, "key announcement needs an id, a 32-byte key and expires_at after issued_at");
  // Same clock rule as plans; no not_before field, so issued_at stands in with
  // the same tolerance for an agent clock that runs behind.
  constexpr int64_t kSkew = 60;
  if (now + kSkew < ann.issued_at())
    return V::reject(cairn::v1::ERROR_CODE_NOT_YET_VALID, "key announcement '" + ann.announcement_id() + "' is issued in the future");
  if (now >= ann.expires_at())
    return V::reject(cairn::v1::ERROR_CODE_EXPIRED, "key announcement '" + ann.announcement_id() + "' has expired");
  std::copy(ann.new_public_key().begin(), ann.new_public_key().end(), pub.begin());
  std::string new_id = key_id(pub);
  if (retired_.count(new_id))
    return V::reject(cairn::v1::ERROR_CODE_KEY_RETIRED, "key '" + new_id + "' was retired and cannot be trusted again");
  for (const auto& r : ann.retire_key_ids())
    if (r == new_id)
      return V::reject(cairn::v1::ERROR_CODE_MALFORMED_PAYLOAD, "key announcement adds and retires the same key '" + new_id + "'");

  // Build the next state and persist it before it takes effect, so a failed
  // write leaves the agent with the keys it had.
  TrustStore next = *this;
  KeyChange change;
  change.announcement_id = ann.announcement_id();
  change.signed_by = opened->key_id;
  if (!next.keys_.count(new_id)) {
    next.keys_[new_id] = TrustedKey{new_id, pub, now, "announcement '" + ann.announcement_id() + "'"};
    change.added_key_id = new_id;
  }
  for (const auto& r : ann.retire_key_ids()) {
    if (!next.retired_.insert(r).second) continue;
    next.keys_.erase(r);
    change.retired.push_back(r);
  }
  try {
    next.save();
  } catch (const Error& e) {
    return V::reject(cairn::v1::ERROR_CODE_INTERNAL, std::string("cannot save trusted keys: ") + e.what());
  }
  *this = std::move(next);
  return V::accept(std::move(change));
}

void TrustStore::save() const {
  if (path_.empty()) return;
  nlohmann::json j;
  j["format"] = kFormat;
  j["version"] = kVersion;
  j["keys"] = nlohmann::json::array();
  for (const auto& [id, k] : keys_)
    j["keys"].push_back({{"key_id", id}, {"public_key", format_public_key(k.public_key)}, {"added_at", k.added_at}, {"source", k.source}});
  j["retired"] = retired_;
  std::string text = j.dump(2) + "\n";
  write_file_atomic(path_, as_bytes(text), 0644);
}

}  // namespace cairn::plan
