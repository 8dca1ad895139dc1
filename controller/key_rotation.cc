#include "controller/key_rotation.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "common/crypto/crypto.h"
#include "common/plan/signer.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "controller/keyfiles.h"
#include "proto/cairn.pb.h"

namespace cairn::controller {
namespace {

bool rotation_file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// Step 3: the new key replaces the old one on disk; its public half is
// rewritten for the agents enrolled from now on.
void install_key_file(const std::string& key_dir, const std::string& next, const plan::SigningKey& key) {
  std::string path = key_dir + "/" + kSigningKeyFile;
  if (::rename(next.c_str(), path.c_str()) != 0) throw_errno("cannot install the new signing key as", path, errno);
  fsync_dir(key_dir);
  std::string pub = plan::format_public_key(key.public_key()) + "\n";
  write_file_atomic(key_dir + "/" + kSigningPubFile, as_bytes(pub), 0644);
}

}  // namespace

plan::SigningKey load_signing_key(catalog::Catalog& catalog, const std::string& key_dir) {
  const std::string path = key_dir + "/" + kSigningKeyFile;
  const std::string next = path + ".next";
  if (rotation_file_exists(next)) {
    auto nk = plan::SigningKey::load(next);
    auto rec = catalog.read([&](const catalog::Tx& tx) { return tx.controller_key(nk.key_id()); });
    if (rec && rec->state != "retired") {
      spdlog::warn("finishing the rotation to signing key '{}' that was interrupted", nk.key_id());
      install_key_file(key_dir, next, nk);
    } else {
      spdlog::warn("discarding '{}': a rotation stopped before it was recorded; the current key stays", next);
      if (::unlink(next.c_str()) != 0) throw_errno("cannot remove", next, errno);
    }
  }
  auto key = plan::SigningKey::load(path);
  const std::string id = key.key_id();
  // The public half for agents enrolled later: rewritten when it does not
  // match (a rotation stopped between installing the key and writing it).
  const std::string pub_path = key_dir + "/" + kSigningPubFile, pub = plan::format_public_key(key.public_key()) + "\n";
  bool pub_ok = false;
  try {
    Bytes cur = read_file(pub_path);
    pub_ok = std::string(cur.begin(), cur.end()) == pub;
  } catch (const Error&) {
  }
  if (!pub_ok) write_file_atomic(pub_path, as_bytes(pub), 0644);
  catalog.transaction("controller", [&](catalog::Tx& tx) {
    auto rec = tx.controller_key(id);
    if (!rec) {
      if (auto other = tx.active_controller_key())
        spdlog::warn(
            "signing key '{}' in '{}' replaces '{}' without a rotation: agents accept its plans only if their "
            "signing_keys_file lists it (use 'cairnctl keys rotate' to change keys)",
            id, path, *other);
      tx.add_controller_key(id, key.public_key(), /*active=*/true);
      // The key it replaced is done with: left standby, it would pass for a
      // rotation in progress.
      if (auto other = tx.standby_controller_key()) tx.retire_controller_key(*other);
    } else if (rec->state == "standby") {
      tx.activate_controller_key(id);  // a rotation stopped between steps 3 and 4
    } else if (rec->state == "retired") {
      throw Error(Errc::invalid_input, "the signing key in '" + path + "' ('" + id +
                                           "') was retired (by a key rotation, or replaced by another key file) and agents refuse its "
                                           "plans; put the current key back (see 'cairnctl status' for its id)");
    }
  });
  return key;
}

RotationResult rotate_signing_key(catalog::Catalog& catalog, const std::string& key_dir, plan::SigningKey& active, int64_t validity_s,
                                  const std::string& actor) {
  if (validity_s < 3600) throw Error(Errc::invalid_input, "the announcement must stay valid for at least an hour");
  const std::string next = key_dir + "/" + kSigningKeyFile + ".next";
  RotationResult out;
  out.old_key_id = active.key_id();
  auto nk = plan::SigningKey::generate();
  out.new_key_id = nk.key_id();
  out.new_public_key = plan::format_public_key(nk.public_key());
  out.announcement_id = "ka-" + to_hex(crypto::random_array<8>());
  nk.save(next, /*overwrite=*/true);  // step 1

  catalog.transaction(actor, [&](catalog::Tx& tx) {  // step 2
    // A rotation whose last steps failed is finished by the next start; a
    // second one on top of it would announce a key whose secret is gone.
    if (auto pending = tx.standby_controller_key())
      throw Error(Errc::invalid_input, "the rotation to signing key '" + *pending +
                                           "' is not finished; restart cairn-controller to complete it, then rotate again");
    cairn::v1::KeyAnnouncement ann;
    ann.set_announcement_id(out.announcement_id);
    ann.set_new_public_key(std::string(nk.public_key().begin(), nk.public_key().end()));
    ann.add_retire_key_ids(out.old_key_id);
    // Backdated: an agent whose clock runs a few minutes behind still takes it.
    ann.set_issued_at(tx.now() - 300);
    ann.set_expires_at(tx.now() + validity_s);
    out.expires_at = ann.expires_at();
    tx.add_controller_key(out.new_key_id, nk.public_key(), /*active=*/false);
    tx.add_key_announcement({out.announcement_id,
                             out.new_key_id,
                             out.old_key_id,
                             {out.old_key_id},
                             ann.issued_at(),
                             ann.expires_at(),
                             plan::sign_key_announcement(active, ann)});
    // Plans not yet answered would be refused once agents retire the old key.
    for (const auto& p : tx.all_issued_plans()) {
      cairn::v1::SignedEnvelope env;
      cairn::v1::PlanPayload payload;
      if (p.envelope.empty() || !env.ParseFromArray(p.envelope.data(), int(p.envelope.size())) || !payload.ParseFromString(env.payload()))
        continue;  // nothing to re-sign; it expires into `missed` as before
      tx.resign_plan(p.id, out.new_key_id, plan::sign_plan(nk, payload));
      ++out.plans_resigned;
    }
    // Every set's record is signed again by the new key (controller/set_record.h):
    // a rebuild given the new key then trusts them all.
    tx.set_records_due_unwritten(out.new_key_id);
  });
  // Committed: from here on the new key signs, whatever the last two steps
  // do (the re-signed plans and the announcement already name it).
  active = std::move(nk);
  try {
    install_key_file(key_dir, next, active);                                                           // step 3
    catalog.transaction(actor, [&](catalog::Tx& tx) { tx.activate_controller_key(out.new_key_id); });  // step 4
  } catch (const std::exception& e) {
    out.incomplete = e.what();
    spdlog::error(
        "signing key rotation to '{}': the new key signs, but its last steps failed ({}); the next start of "
        "cairn-controller completes them",
        out.new_key_id, e.what());
  }
  spdlog::info("signing key rotated: '{}' -> '{}' (announcement '{}', {} unanswered plan(s) re-signed)", out.old_key_id, out.new_key_id,
               out.announcement_id, out.plans_resigned);
  return out;
}

}  // namespace cairn::controller
