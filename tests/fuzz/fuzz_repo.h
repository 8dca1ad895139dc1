#pragma once
// A small real repository for the fuzz targets of repository files: the
// filesystem backend in a fresh temp directory per input, a fixed master key
// and passphrase, and the file encodings of docs/repository-format.md, so that
// an input is the *plaintext* of a file (what someone holding the repository
// password can write) and goes through the same authentication, decompression
// and parsing as cairnctl's. Deterministic: a corpus file means the same
// thing in every run.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/repo/repository.h"

namespace cairn::fuzz {

// The fuzz inputs are attacker data: everything refused with cairn::Error is
// expected, anything else (a crash, a leak, an exception of another type
// escaping, a huge allocation) is a finding.
class FuzzRepo {
 public:
  static constexpr std::string_view kPassphrase = "fuzz";
  static constexpr std::string_view kRepoId = "00112233445566778899aabbccddeeff";

  // A new repository (config + one key slot) in a fresh temp directory,
  // removed by the destructor. config_text / slot_text replace the valid ones.
  FuzzRepo();
  FuzzRepo(std::string_view config_text, std::string_view slot_text);
  ~FuzzRepo();
  FuzzRepo(const FuzzRepo&) = delete;
  FuzzRepo& operator=(const FuzzRepo&) = delete;

  const std::string& dir() const { return dir_; }
  std::unique_ptr<repo::Backend> backend() const;
  // Opens it with the passphrase (throws cairn::Error as Repository::open does).
  std::unique_ptr<repo::Repository> open() const;

  // Writes `plain` (the file's plaintext: encoding byte, u32le length, body)
  // sealed as a file of type t; returns its name.
  std::string put_file(repo::FileType t, std::span<const uint8_t> plain) const;
  // The same for a JSON text stored raw (encoding 0).
  std::string put_raw(repo::FileType t, std::string_view text) const;

  // The valid config and key slot texts every FuzzRepo starts with.
  static const std::string& valid_config();
  static const std::string& valid_slot();
  // The config text with `sealed_plain` sealed in as its parameters.
  static std::string config_with(std::string_view outer_template, std::string_view sealed_plain);

 private:
  void make(std::string_view config_text, std::string_view slot_text);
  std::string dir_;
};

}  // namespace cairn::fuzz
