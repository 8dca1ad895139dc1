#include "common/repo/keys.h"

#include <openssl/crypto.h>

#include <chrono>
#include <ctime>
#include <nlohmann/json.hpp>

#include "common/repo/json_int.h"
#include "common/repo/limits.h"
#include "common/repo/storage/registry.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::repo {

using nlohmann::json;

namespace {
// Version 1 slots sealed the master key under a fixed aad: their other fields were
// not authenticated (the file name, a hash of the file, still shows their damage).
constexpr std::string_view kKeyAadV1 = "cairn-key-v1";
constexpr int kKeySlotVersion = 2;

// What a version-2 seal authenticates: every field but "data", canonical
// (nlohmann's dump: keys sorted, no spaces).
std::string slot_aad(const json& slot) {
  json meta = slot;
  meta.erase("data");
  return "cairn-key-v2\n" + meta.dump();
}

// Proves the wrapping key right before the seal is opened, so that a slot whose
// fields were changed reads as damaged, not as a wrong passphrase.
std::string verifier(const crypto::Key& wk) {
  crypto::Hash h = crypto::KeyedHash(wk)(as_bytes(std::string_view("cairn-key-verifier-v2")));
  return to_base64(std::span<const uint8_t>(h.data(), 16));
}

// A slot's bytes, refused above the format's ceiling before they are read, and
// checked against the slot's name (a hash of them). Returns why it is damaged, or "".
std::string load_slot(Backend& be, const std::string& id, Bytes& raw) {
  auto size = be.size({FileType::key, id});
  if (!size) return "vanished while it was read";
  if (*size > kMaxKeySlotFile)
    return "is " + std::to_string(*size) + " bytes, above the limit of " + std::to_string(kMaxKeySlotFile) + " for a key slot";
  raw = be.load({FileType::key, id});
  if (to_hex(crypto::sha256(raw)) != id) return "does not match its name (a hash of its bytes)";
  return {};
}

// The most memory a key slot's scrypt parameters may ask for (128 * r * n); the
// default (n = 2^15, r = 8) needs 32 MiB. docs/repository-format.md § Key slots.
constexpr uint64_t kMaxScryptMemory = 1ull << 30;

crypto::Key wrapping_key(const Secret& s, const json& slot) {
  Bytes salt;
  if (!from_base64(slot.at("salt").get<std::string>(), salt)) throw Error(Errc::corrupt, "has a malformed salt");
  std::string kdf = slot.at("kdf").get<std::string>();
  if (kdf == "scrypt") {
    if (s.kind != Secret::Kind::passphrase) return {};
    crypto::ScryptParams p{json_int_at<uint64_t>(slot, "n"), json_int_at<uint32_t>(slot, "r"), json_int_at<uint32_t>(slot, "p")};
    // scrypt needs 128 * r * n bytes: bounded too, or a slot asking n = 2^22, r = 32 takes 16 GiB (fuzz_key_slot).
    if (p.n > (1u << 22) || p.r > 32 || p.p > 16 || 128ull * p.r * p.n > kMaxScryptMemory)
      throw Error(Errc::corrupt, "asks for unreasonable scrypt parameters");
    return crypto::scrypt(s.value, salt, p);
  }
  if (kdf == "hkdf-sha256") {
    if (s.kind != Secret::Kind::key_file) return {};
    return crypto::hkdf_sha256(as_bytes(s.value), salt, "cairn key file v1");
  }
  throw Error(Errc::unsupported, "key slot uses unknown kdf '" + kdf + "'");
}
}  // namespace

Secret::~Secret() { OPENSSL_cleanse(value.data(), value.size()); }

bool parse_id(std::string_view hex, BlobId& out) {
  BlobId b;
  if (!from_hex(hex, std::span<uint8_t>(b))) return false;
  out = b;
  return true;
}

std::string now_rfc3339() {
  auto now = std::chrono::system_clock::now();
  auto t = std::chrono::system_clock::to_time_t(now);
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count() % 1000000000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, sizeof buf - n, ".%09lldZ", static_cast<long long>(ns));
  return buf;
}

std::string add_key_slot(Backend& be, const MasterKey& mk, const Secret& secret, const KdfParams& kdf) {
  auto salt = crypto::random_array<32>();
  json slot = {{"version", kKeySlotVersion},
               {"created", now_rfc3339()},
               {"hostname", hostname()},
               {"username", username()},
               {"salt", to_base64(salt)}};
  if (secret.kind == Secret::Kind::passphrase) {
    slot["kdf"] = "scrypt";
    slot["n"] = kdf.scrypt.n;
    slot["r"] = kdf.scrypt.r;
    slot["p"] = kdf.scrypt.p;
  } else {
    if (secret.value.size() < 32) throw Error(Errc::invalid_input, "a key file must hold at least 32 bytes of random data");
    slot["kdf"] = "hkdf-sha256";
  }
  crypto::Key wk = wrapping_key(secret, slot);
  Bytes plain(64);
  std::copy(mk.encrypt.begin(), mk.encrypt.end(), plain.begin());
  std::copy(mk.id.begin(), mk.id.end(), plain.begin() + 32);
  slot["verifier"] = verifier(wk);
  slot["data"] = to_base64(crypto::Aead(wk).seal(as_bytes(slot_aad(slot)), plain));
  OPENSSL_cleanse(plain.data(), plain.size());
  OPENSSL_cleanse(wk.data(), wk.size());
  std::string text = slot.dump(2) + "\n";
  std::string id = to_hex(crypto::sha256(as_bytes(text)));
  be.save({FileType::key, id}, as_bytes(text));
  return id;
}

namespace {
// Opens one slot's bytes: the master key, or nullopt with `damaged` told why when
// the slot is damaged (nothing when it is simply another secret's slot).
std::optional<MasterKey> try_slot(const std::string& obj, const Bytes& raw, const Secret& secret, std::string& damaged) {
  try {
    json slot = json::parse(raw.begin(), raw.end());
    int version = json_int_at<int>(slot, "version");
    if (version != 1 && version != kKeySlotVersion) return std::nullopt;  // a newer cairn's slot: others may open
    crypto::Key wk = wrapping_key(secret, slot);
    if (wk == crypto::Key{}) return std::nullopt;  // slot of the other kind
    Bytes sealed, plain;
    if (!from_base64(slot.at("data").get<std::string>(), sealed)) {
      damaged = obj + " has a malformed sealed key";
      return std::nullopt;
    }
    bool ok;
    if (version == 1) {
      ok = crypto::Aead(wk).open(as_bytes(kKeyAadV1), sealed, plain);
    } else {
      bool right_key = crypto::equal(as_bytes(verifier(wk)), as_bytes(slot.at("verifier").get<std::string>()));
      ok = right_key && crypto::Aead(wk).open(as_bytes(slot_aad(slot)), sealed, plain);
      if (right_key && !ok) damaged = obj + " fails authentication: its fields were changed";
    }
    OPENSSL_cleanse(wk.data(), wk.size());
    if (!ok) return std::nullopt;
    if (plain.size() != 64) {
      damaged = obj + " holds a master key of the wrong length";
      return std::nullopt;
    }
    MasterKey mk;
    std::copy(plain.begin(), plain.begin() + 32, mk.encrypt.begin());
    std::copy(plain.begin() + 32, plain.end(), mk.id.begin());
    OPENSSL_cleanse(plain.data(), plain.size());
    return mk;
  } catch (const json::exception& e) {
    damaged = obj + " is malformed (" + e.what() + ")";  // others may still open
  } catch (const Error& e) {
    if (e.code() == Errc::unsupported) return std::nullopt;  // unknown kdf: a newer cairn's slot
    if (e.code() != Errc::corrupt) throw;
    damaged = obj + " " + e.what();
  }
  return std::nullopt;
}
}  // namespace

MasterKey open_master_key(Backend& be, const Secret& secret, std::string* slot_id, std::vector<EarlierVersionUsed>* used) {
  std::vector<std::string> ids;
  be.list(FileType::key, [&](const std::string& name, uint64_t) { ids.push_back(name); });
  std::sort(ids.begin(), ids.end());
  std::vector<std::string> damaged;  // "'keys/…' why"
  std::vector<std::string> damaged_ids;
  for (const auto& id : ids) {
    std::string obj = "'keys/" + id + "'";
    Bytes raw;
    std::string why;
    try {
      why = load_slot(be, id, raw);
    } catch (const Error& e) {
      if (e.code() != Errc::corrupt) throw;
      why = e.what();
    }
    if (!why.empty()) {
      if (why.rfind("vanished", 0) != 0) {
        damaged.push_back(obj + " " + why);
        damaged_ids.push_back(id);
      }
      continue;
    }
    std::string bad;
    if (auto mk = try_slot(obj, raw, secret, bad)) {
      if (slot_id) *slot_id = id;
      return *mk;
    }
    if (!bad.empty()) {
      damaged.push_back(bad);
      damaged_ids.push_back(id);
    }
  }
  // None opens. A store that keeps versions may hold an earlier, whole version of a
  // damaged slot, or of one deleted (a slot's name is the hash of its bytes).
  auto from_earlier = [&](const std::string& id, const std::string& version, const std::string& modified,
                          const std::string& why) -> std::optional<MasterKey> {
    Bytes raw;
    try {
      raw = be.load_version({FileType::key, id}, version);
    } catch (const Error&) {
      return std::nullopt;
    }
    if (raw.size() > kMaxKeySlotFile || to_hex(crypto::sha256(raw)) != id) return std::nullopt;
    std::string bad;
    auto mk = try_slot("'keys/" + id + "'", raw, secret, bad);
    if (mk) {
      if (slot_id) *slot_id = id;
      if (used) used->push_back(EarlierVersionUsed{FileType::key, id, version, modified, why});
      storage_log("key slot 'keys/" + id + "' of '" + be.location() + "' " + why + "; opened with the earlier version " + version +
                  " the store keeps: run 'cairnctl repo check --recover' where the controller's credentials are to put it back");
    }
    return mk;
  };
  for (size_t i = 0; i < damaged_ids.size(); ++i) {
    std::vector<ObjectVersion> vs;
    try {
      vs = be.versions({FileType::key, damaged_ids[i]});
    } catch (const Error&) {
    }
    for (const auto& v : vs) {
      if (v.marker || v.latest) continue;
      const std::string& d = damaged[i];
      if (auto mk = from_earlier(damaged_ids[i], v.version, v.modified, "is damaged (" + d.substr(d.find(' ') + 1) + ")")) return *mk;
    }
  }
  try {
    std::vector<KeptVersion> deleted;
    be.list_deleted_versions([&](const KeptVersion& v) {
      if (!v.marker && v.key.rfind("keys/", 0) == 0) deleted.push_back(v);
    });
    for (const auto& v : deleted)
      if (auto mk = from_earlier(v.key.substr(5), v.version, "", "was deleted")) return *mk;
  } catch (const Error&) {
  }
  if (ids.empty()) throw Error(Errc::corrupt, "repository '" + be.location() + "' has no key slots");
  if (!damaged.empty()) {
    std::string list;
    for (const auto& d : damaged) list += (list.empty() ? "" : "; ") + d;
    throw Error(Errc::corrupt, "repository '" + be.location() + "' is damaged: no key slot opens with the given " +
                                   (secret.kind == Secret::Kind::passphrase ? "passphrase" : "key file") + ", and " + list +
                                   ". If the secret belongs to a damaged slot, restore that file from a copy of the repository "
                                   "(or open with another key and add a new slot); otherwise the secret is wrong");
  }
  throw Error(Errc::wrong_key, secret.kind == Secret::Kind::passphrase
                                   ? "wrong passphrase: no key slot of '" + be.location() + "' opens with it"
                                   : "wrong key file: no key slot of '" + be.location() + "' opens with it");
}

std::vector<KeySlotInfo> list_key_slots(Backend& be) {
  std::vector<KeySlotInfo> out;
  be.list(FileType::key, [&](const std::string& name, uint64_t) {
    KeySlotInfo k{name, "", "", "", ""};
    try {
      Bytes raw;
      if (!load_slot(be, name, raw).empty()) throw Error(Errc::corrupt, "damaged");
      json s = json::parse(raw.begin(), raw.end());
      k.created = s.value("created", "");
      k.hostname = s.value("hostname", "");
      k.username = s.value("username", "");
      k.kdf = s.value("kdf", "");
    } catch (const std::exception&) {
      k.kdf = "unreadable";
    }
    out.push_back(k);
  });
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.created < b.created; });
  return out;
}

}  // namespace cairn::repo
