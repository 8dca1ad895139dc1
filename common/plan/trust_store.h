#pragma once
// The controller keys an agent trusts to sign plans. Keys join from the
// agent's configuration (first start) or from a KeyAnnouncement signed by a
// key already trusted; a retired key never comes back, so replaying an old
// announcement cannot resurrect it.
#include <cstdint>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "common/plan/signing_key.h"
#include "common/plan/verdict.h"

namespace cairn::plan {

struct TrustedKey {
  std::string key_id;
  PublicKey public_key{};
  int64_t added_at = 0;  // unix seconds
  std::string source;    // "config" or "announcement '<id>'"
};

struct KeyChange {
  std::string announcement_id;
  std::string signed_by;             // key id that signed the announcement
  std::string added_key_id;          // empty when the key was already trusted
  std::vector<std::string> retired;  // key ids newly retired
};

class TrustStore {
 public:
  // An in-memory store; save() is a no-op.
  TrustStore() = default;
  // Loads the store at path, or starts an empty one bound to path when the file
  // does not exist. Throws cairn::Error(corrupt) when it exists but does not parse.
  static TrustStore open(const std::string& path);

  // Adds a key from configuration. Returns false (and changes nothing) when the
  // key was retired: configuration must not undo a rotation.
  bool add(const PublicKey& pub, int64_t now, const std::string& source);

  const TrustedKey* find(const std::string& key_id) const;
  bool is_retired(const std::string& key_id) const { return retired_.count(key_id) != 0; }
  std::vector<std::string> key_ids() const;
  size_t size() const { return keys_.size(); }

  // Verifies a serialized SignedEnvelope carrying a KeyAnnouncement and, when
  // it is valid, adds the new key, retires the listed ones and saves. Refuses:
  // the envelope reasons of open_envelope(), expired / not yet valid, a
  // malformed announcement, a retired new key (key_retired), and retiring the
  // key being added.
  [[nodiscard]] Verdict<KeyChange> apply_announcement(std::span<const uint8_t> envelope, int64_t now);

  // Writes atomically (temp file, fsync, rename, fsync dir) when bound to a path.
  void save() const;

 private:
  std::string path_;
  std::map<std::string, TrustedKey> keys_;
  std::set<std::string> retired_;
};

}  // namespace cairn::plan
