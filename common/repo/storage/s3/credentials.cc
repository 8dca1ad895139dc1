#include "common/repo/storage/s3/credentials.h"

#include <sys/stat.h>

#include <cstdlib>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/repo/storage/text.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::repo::storage::s3 {
namespace {

std::string lower_key(std::string k) {
  for (auto& c : k) c = char(std::tolower(static_cast<unsigned char>(c)));
  if (k.rfind("aws_", 0) == 0) k = k.substr(4);  // AWS_ACCESS_KEY_ID= is accepted too
  return k;
}

// "2026-11-26T21:00:00Z" → time point.
std::chrono::system_clock::time_point parse_iso(const std::string& s) {
  std::tm tm{};
  if (!strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm)) return {};
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

}  // namespace

Credentials::Credentials(const StorageOptions& opt) : opt_(opt) {}

bool Credentials::load_file_source() {
  const std::string& path = opt_.credentials_file;
  std::map<std::string, std::string> kv;
  for (auto& [k, v] : read_credentials_file(path, "access_key_id, secret_access_key, session_token, region")) kv[lower_key(k)] = v;
  settings_ = kv;
  if (kv["access_key_id"].empty() != kv["secret_access_key"].empty())
    throw Error(Errc::invalid_input, "credentials file '" + path + "' names only one of access_key_id and secret_access_key");
  if (kv["access_key_id"].empty()) return false;  // settings only: keys from the other sources
  key_ = {kv["access_key_id"], kv["secret_access_key"], kv["session_token"]};
  source_ = "credentials file '" + path + "'";
  file_ = path;
  return true;
}

bool Credentials::load_shared_file() {
  std::string path = env_or_empty("AWS_SHARED_CREDENTIALS_FILE");
  if (path.empty() && !env_or_empty("HOME").empty()) path = env_or_empty("HOME") + "/.aws/credentials";
  if (path.empty()) return false;
  std::ifstream in(path);
  if (!in) return false;
  std::string profile = env_or_empty("AWS_PROFILE").empty() ? "default" : env_or_empty("AWS_PROFILE");
  std::string section, line;
  std::map<std::string, std::string> kv;
  while (std::getline(in, line)) {
    line = trim_blanks(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[' && line.back() == ']') {
      section = trim_blanks(line.substr(1, line.size() - 2));
      continue;
    }
    if (section != profile) continue;
    auto eq = line.find('=');
    if (eq != std::string::npos) kv[lower_key(trim_blanks(line.substr(0, eq)))] = trim_blanks(line.substr(eq + 1));
  }
  if (kv["access_key_id"].empty() || kv["secret_access_key"].empty()) return false;
  key_ = {kv["access_key_id"], kv["secret_access_key"], kv["session_token"]};
  source_ = "shared credentials file '" + path + "', profile '" + profile + "'";
  file_ = path;
  return true;
}

bool Credentials::load_imds(HttpClient& http) {
  if (env_or_empty("AWS_EC2_METADATA_DISABLED") == "true") return false;
  std::string base = env_or_empty("AWS_EC2_METADATA_SERVICE_ENDPOINT");
  if (base.empty()) base = "http://169.254.169.254";
  while (!base.empty() && base.back() == '/') base.pop_back();
  HttpRequest tr{.method = "PUT", .url = base + "/latest/api/token", .headers = {{"X-aws-ec2-metadata-token-ttl-seconds", "21600"}}};
  HttpResponse t = http.perform(tr);
  if (t.status != 200) return false;
  std::string token(t.body.begin(), t.body.end());
  HttpRequest rr{.url = base + "/latest/meta-data/iam/security-credentials/", .headers = {{"X-aws-ec2-metadata-token", token}}};
  HttpResponse role = http.perform(rr);
  if (role.status != 200 || role.body.empty()) return false;
  std::string name(role.body.begin(), role.body.end());
  name = trim_blanks(name.substr(0, name.find('\n')));
  HttpRequest cr{.url = base + "/latest/meta-data/iam/security-credentials/" + name, .headers = {{"X-aws-ec2-metadata-token", token}}};
  HttpResponse c = http.perform(cr);
  if (c.status != 200) return false;
  auto j = nlohmann::json::parse(std::string(c.body.begin(), c.body.end()), nullptr, false);
  if (!j.is_object() || !j.contains("AccessKeyId") || !j.contains("SecretAccessKey") || !j["AccessKeyId"].is_string() ||
      !j["SecretAccessKey"].is_string())
    throw Error(Errc::denied,
                "the instance metadata service at '" + base + "' answered credentials for role '" + name + "' that cannot be read");
  key_ = {j["AccessKeyId"].get<std::string>(), j["SecretAccessKey"].get<std::string>(), j.value("Token", std::string())};
  expires_ = j.contains("Expiration") && j["Expiration"].is_string() ? parse_iso(j["Expiration"].get<std::string>())
                                                                     : std::chrono::system_clock::time_point{};
  source_ = "instance metadata service '" + base + "', role '" + name + "'";
  file_.clear();
  return true;
}

SigningKey Credentials::get(HttpClient& http) {
  std::lock_guard g(mu_);
  auto now = std::chrono::steady_clock::now();
  if (resolved_) {
    if (!file_.empty()) {
      if (now - checked_ < std::chrono::seconds(1)) return key_;
      checked_ = now;
      std::string s = file_stamp(file_);
      if (s == file_stamp_) return key_;
      file_stamp_ = s;  // changed: read again below
      if (file_ == opt_.credentials_file ? load_file_source() : load_shared_file()) return key_;
    } else if (expires_ == std::chrono::system_clock::time_point{} ||
               std::chrono::system_clock::now() + std::chrono::minutes(5) < expires_) {
      return key_;
    }
  }
  resolved_ = false;
  checked_ = now;
  if (!opt_.credentials_file.empty()) {
    file_stamp_ = file_stamp(opt_.credentials_file);
    if (load_file_source()) return resolved_ = true, key_;
  }
  if (!env_or_empty("AWS_ACCESS_KEY_ID").empty() && !env_or_empty("AWS_SECRET_ACCESS_KEY").empty()) {
    key_ = {env_or_empty("AWS_ACCESS_KEY_ID"), env_or_empty("AWS_SECRET_ACCESS_KEY"), env_or_empty("AWS_SESSION_TOKEN")};
    source_ = "environment (AWS_ACCESS_KEY_ID)";
    file_.clear();
    expires_ = {};
    return resolved_ = true, key_;
  }
  if (load_shared_file()) {
    file_stamp_ = file_stamp(file_);
    return resolved_ = true, key_;
  }
  if (load_imds(http)) return resolved_ = true, key_;
  throw Error(Errc::denied,
              "no S3 credentials found: name a credentials file (mode 0600, access_key_id= and secret_access_key= lines), "
              "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or provide ~/.aws/credentials or an instance role");
}

std::string Credentials::describe() {
  std::lock_guard g(mu_);
  return source_.empty() ? "no credential source" : source_;
}

std::string Credentials::setting(const std::string& name) {
  std::lock_guard g(mu_);
  if (settings_.empty() && !opt_.credentials_file.empty()) {
    try {
      load_file_source();
    } catch (const Error&) {
      // reported by get()
    }
  }
  auto it = settings_.find(name);
  return it == settings_.end() ? std::string() : it->second;
}

}  // namespace cairn::repo::storage::s3
