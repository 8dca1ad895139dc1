#pragma once
// Shared pieces of the agent tests: a temp dir that cleans up, and a valid
// configuration around it (password file 0600, signing keys file, a
// repository and a files component).
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace cairn::agent::test {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "cairn-agent-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string path() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline void write_text(const std::string& path, const std::string& text, int mode = 0644) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
  ::chmod(path.c_str(), mode);
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A Z85 CURVE public key (any 40 valid characters decode).
inline constexpr const char* kControllerKey = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";

// Writes password and signing-key files under dir; returns config text whose
// [[component]] 'data' declares dir/data and restores to dir/alt.
inline std::string base_config(const TempDir& dir, const std::string& signing_key_line = "") {
  write_text(dir.file("repo.pass"), "correct horse\n", 0600);
  write_text(dir.file("signing.pub"), "# controller keys\n" + signing_key_line + "\n");
  return "name = \"node-1\"\n"
         "state_dir = \"" + dir.file("state") + "\"\n"
         "\n"
         "[controller]\n"
         "endpoint = \"tcp://127.0.0.1:7600\"\n"
         "public_key = \"" + std::string(kControllerKey) + "\"\n"
         "signing_keys_file = \"" + dir.file("signing.pub") + "\"\n"
         "\n"
         "[[repository]]\n"
         "name = \"main\"\n"
         "path = \"" + dir.file("repo") + "\"\n"
         "password_file = \"" + dir.file("repo.pass") + "\"\n"
         "\n"
         "[[component]]\n"
         "name = \"data\"\n"
         "driver = \"files\"\n"
         "paths = [\"" + dir.file("data") + "\"]\n"
         "restore_to = \"" + dir.file("alt") + "\"\n";
}

}  // namespace cairn::agent::test
