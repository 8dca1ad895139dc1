#include "common/repo/keys.h"

#include <openssl/crypto.h>

#include <chrono>
#include <ctime>
#include <nlohmann/json.hpp>

#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::repo {

using nlohmann::json;

namespace {
constexpr std::string_view kKeyAad = "cairn-key-v1";

// The most memory a key slot's scrypt parameters may ask for (128 * r * n); the
// default (n = 2^15, r = 8) needs 32 MiB. docs/repository-format.md § Key slots.
constexpr uint64_t kMaxScryptMemory = 1ull << 30;

crypto::Key wrapping_key(const Secret& s, const json& slot) {
  Bytes salt;
  if (!from_base64(slot.at("salt").get<std::string>(), salt)) throw Error(Errc::corrupt, "key slot has a malformed salt");
  std::string kdf = slot.at("kdf").get<std::string>();
  if (kdf == "scrypt") {
    if (s.kind != Secret::Kind::passphrase) return {};
    crypto::ScryptParams p{slot.at("n").get<uint64_t>(), slot.at("r").get<uint32_t>(), slot.at("p").get<uint32_t>()};
    // scrypt needs 128 * r * n bytes: bounded too, or a slot asking n = 2^22, r = 32 takes 16 GiB (fuzz_key_slot).
    if (p.n > (1u << 22) || p.r > 32 || p.p > 16 || 128ull * p.r * p.n > kMaxScryptMemory)
      throw Error(Errc::corrupt, "key slot asks for unreasonable scrypt parameters");
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
  json slot = {{"version", kFormatVersion}, {"created", now_rfc3339()}, {"hostname", hostname()},
               {"username", username()}, {"salt", to_base64(salt)}};
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
  slot["data"] = to_base64(crypto::Aead(wk).seal(as_bytes(kKeyAad), plain));
  OPENSSL_cleanse(plain.data(), plain.size());
  OPENSSL_cleanse(wk.data(), wk.size());
  std::string text = slot.dump(2) + "\n";
  std::string id = to_hex(crypto::sha256(as_bytes(text)));
  be.save({FileType::key, id}, as_bytes(text));
  return id;
}

MasterKey open_master_key(Backend& be, const Secret& secret, std::string* slot_id) {
  std::vector<std::string> ids;
  be.list(FileType::key, [&](const std::string& name, uint64_t) { ids.push_back(name); });
  if (ids.empty()) throw Error(Errc::corrupt, "repository '" + be.location() + "' has no key slots");
  std::sort(ids.begin(), ids.end());
  for (const auto& id : ids) {
    json slot;
    try {
      Bytes raw = be.load({FileType::key, id});
      slot = json::parse(raw.begin(), raw.end());
      crypto::Key wk = wrapping_key(secret, slot);
      if (wk == crypto::Key{}) continue;  // slot of the other kind
      Bytes sealed, plain;
      if (!from_base64(slot.at("data").get<std::string>(), sealed)) continue;
      bool ok = crypto::Aead(wk).open(as_bytes(kKeyAad), sealed, plain);
      OPENSSL_cleanse(wk.data(), wk.size());
      if (!ok || plain.size() != 64) continue;
      MasterKey mk;
      std::copy(plain.begin(), plain.begin() + 32, mk.encrypt.begin());
      std::copy(plain.begin() + 32, plain.end(), mk.id.begin());
      OPENSSL_cleanse(plain.data(), plain.size());
      if (slot_id) *slot_id = id;
      return mk;
    } catch (const json::exception&) {
      continue;  // a malformed slot cannot open; others may
    }
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
      Bytes raw = be.load({FileType::key, name});
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
