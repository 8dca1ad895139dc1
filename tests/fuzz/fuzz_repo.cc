#include "fuzz_repo.h"

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "common/crypto/crypto.h"
#include "common/repo/keys.h"
#include "common/util/encoding.h"

namespace cairn::fuzz {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

repo::MasterKey fixed_master_key() {
  repo::MasterKey mk;
  mk.encrypt.fill(0x11);
  mk.id.fill(0x22);
  return mk;
}

// The associated data of repository files and of the config's sealed
// parameters (docs/repository-format.md § Files, § Config).
std::string file_aad(repo::FileType t) { return std::string("cairn-") + repo::file_type_name(t) + "-v1"; }
std::string config_aad() { return "cairn-config-v1:" + std::string(FuzzRepo::kRepoId); }

std::string temp_root() {
  // tmpfs when there is one: an input is a handful of small files.
  const char* env = std::getenv("CAIRN_FUZZ_TMPDIR");
  if (env && *env) return env;
  std::error_code ec;
  if (fs::is_directory("/dev/shm", ec)) return "/dev/shm";
  return fs::temp_directory_path().string();
}

}  // namespace

const std::string& FuzzRepo::valid_slot() {
  static const std::string slot = [] {
    // A slot with cheap scrypt parameters, written once into a scratch backend.
    std::string tmpl = temp_root() + "/cairn-fuzz-slot-XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    auto be = repo::make_fs_backend(tmpl + "/r");
    be->create();
    repo::KdfParams kdf;
    kdf.scrypt.n = 1u << 4;
    kdf.scrypt.r = 1;
    kdf.scrypt.p = 1;
    std::string id =
        repo::add_key_slot(*be, fixed_master_key(), repo::Secret(repo::Secret::Kind::passphrase, std::string(kPassphrase)), kdf);
    Bytes raw = be->load({repo::FileType::key, id});
    fs::remove_all(tmpl);
    return std::string(raw.begin(), raw.end());
  }();
  return slot;
}

std::string FuzzRepo::config_with(std::string_view outer_template, std::string_view sealed_plain) {
  Bytes sealed = crypto::Aead(fixed_master_key().encrypt).seal(as_bytes(config_aad()), as_bytes(sealed_plain));
  std::string out(outer_template);
  const std::string mark = "@SEALED@";
  for (size_t at = out.find(mark); at != std::string::npos; at = out.find(mark, at)) {
    std::string b64 = to_base64(sealed);
    out.replace(at, mark.size(), b64);
    at += b64.size();
  }
  return out;
}

const std::string& FuzzRepo::valid_config() {
  static const std::string text = [] {
    json params = {{"chunker_seed", to_base64(std::vector<uint8_t>(32, 0x33))}, {"zstd_level", 1}, {"pack_size", 1u << 20}};
    json cfg = {{"format", "cairn-repository"},
                {"version", repo::kFormatVersion},
                {"id", std::string(kRepoId)},
                {"created", "2026-01-01T00:00:00Z"},
                {"sealed", "@SEALED@"}};
    return config_with(cfg.dump(2) + "\n", params.dump());
  }();
  return text;
}

FuzzRepo::FuzzRepo() { make(valid_config(), valid_slot()); }
FuzzRepo::FuzzRepo(std::string_view config_text, std::string_view slot_text) { make(config_text, slot_text); }

void FuzzRepo::make(std::string_view config_text, std::string_view slot_text) {
  std::string tmpl = temp_root() + "/cairn-fuzz-XXXXXX";
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  // The layout without data/00..ff: the backend makes those on demand, and
  // 256 directories made and removed per input would be most of its cost.
  for (const char* d : {"r", "r/keys", "r/data", "r/index", "r/snapshots", "r/locks"}) fs::create_directory(dir_ + "/" + d);
  auto be = backend();
  be->save({repo::FileType::config, ""}, as_bytes(config_text));
  // Any name: slots are found by listing.
  // A slot's file is named by the SHA-256 of its bytes (format spec §5): a
  // fixed name would make every open fail as "damaged" before the input is read.
  be->save({repo::FileType::key, to_hex(crypto::sha256(as_bytes(slot_text)))}, as_bytes(slot_text));
}

FuzzRepo::~FuzzRepo() {
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

std::unique_ptr<repo::Backend> FuzzRepo::backend() const { return repo::make_fs_backend(dir_ + "/r"); }

std::unique_ptr<repo::Repository> FuzzRepo::open() const {
  return repo::Repository::open(backend(), repo::Secret(repo::Secret::Kind::passphrase, std::string(kPassphrase)));
}

std::string FuzzRepo::put_file(repo::FileType t, std::span<const uint8_t> plain) const {
  Bytes sealed = crypto::Aead(fixed_master_key().encrypt).seal(as_bytes(file_aad(t)), plain);
  std::string name = to_hex(crypto::sha256(sealed));
  backend()->save({t, name}, sealed);
  return name;
}

std::string FuzzRepo::put_raw(repo::FileType t, std::string_view text) const {
  Bytes plain(5, 0);
  uint32_t n = uint32_t(text.size());
  for (int i = 0; i < 4; ++i) plain[1 + i] = uint8_t(n >> (8 * i));
  plain.insert(plain.end(), text.begin(), text.end());
  return put_file(t, plain);
}

}  // namespace cairn::fuzz
