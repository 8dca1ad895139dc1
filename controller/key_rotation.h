#pragma once
// The controller's plan-signing key: loading it at start and rotating it.
//
// A rotation makes a new Ed25519 key, signs a KeyAnnouncement for it with the
// current key (the announcement also retires the current key), and keeps the
// announcement in the catalog so every agent — connected now or returning
// months later — is brought over before its next plan. No agent is touched by
// hand. The steps are ordered so that a crash at any point either leaves the
// old key in charge with nothing announced, or completes at the next start:
//
//   1. the new secret key is written to <key_dir>/controller-signing.key.next
//   2. one catalog transaction: the new key (standby), the signed announcement,
//      and every unanswered plan re-signed with the new key      <- commit point
//   3. .next is renamed over controller-signing.key (the old secret is gone)
//      and controller-signing.pub is rewritten
//   4. one catalog transaction: the new key active, the old one retired
//
// At start, load_signing_key() finishes a rotation that passed step 2 and
// discards the .next file of one that did not.
#include <cstdint>
#include <string>

#include "common/plan/signing_key.h"
#include "controller/catalog/catalog.h"

namespace cairn::controller {

// Loads <key_dir>/controller-signing.key, completing or undoing an interrupted
// rotation first, and records the key in the catalog as the active one.
// Throws cairn::Error when the key on disk is one a rotation retired (agents
// refuse its plans) or cannot be read.
plan::SigningKey load_signing_key(catalog::Catalog& catalog, const std::string& key_dir);

struct RotationResult {
  std::string old_key_id;
  std::string new_key_id;
  std::string new_public_key;  // "ed25519:<base64>"
  std::string announcement_id;
  int64_t expires_at = 0;  // the announcement's; agents offline longer need their key file updated
  size_t plans_resigned = 0;
  // Set when steps 3-4 failed: the new key signs already and the next start
  // completes them; the text says what failed.
  std::string incomplete;
};

// Rotates: on return `active` holds the new key. Throws cairn::Error when a
// step fails; see the header comment for what is left behind.
RotationResult rotate_signing_key(catalog::Catalog& catalog, const std::string& key_dir, plan::SigningKey& active,
                                  int64_t announcement_validity_s, const std::string& actor);

}  // namespace cairn::controller
