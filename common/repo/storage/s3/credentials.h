#pragma once
// Where an S3 backend's keys come from, in this order (the AWS SDKs' order,
// with cairn's own file first):
//   1. StorageOptions::credentials_file: KEY=VALUE lines, mode 0600
//      (access_key_id, secret_access_key, session_token; region, sse,
//      sse_kms_key_id, pack_storage_class are settings, not secrets);
//   2. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY [/ AWS_SESSION_TOKEN];
//   3. the shared credentials file (AWS_SHARED_CREDENTIALS_FILE, else
//      ~/.aws/credentials), profile AWS_PROFILE or "default";
//   4. the EC2 instance metadata service, IMDSv2 (AWS_EC2_METADATA_SERVICE_ENDPOINT,
//      else http://169.254.169.254; off with AWS_EC2_METADATA_DISABLED=true).
// Files are read again when they change (a key rotated during a long backup is
// picked up); metadata credentials are fetched again before they expire.
// describe() names the source, never a secret.
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/repo/storage/backend.h"
#include "common/repo/storage/http.h"
#include "common/repo/storage/s3/sigv4.h"

namespace cairn::repo::storage::s3 {

class Credentials {
 public:
  explicit Credentials(const StorageOptions& opt);
  // The keys to sign the next request with; Errc::denied when no source has any.
  SigningKey get(HttpClient& http);
  // "credentials file '/etc/cairn/s3.cred'", "environment (AWS_ACCESS_KEY_ID)", ...
  std::string describe();
  // Settings from the credentials file (region, sse, ...): not secrets.
  std::string setting(const std::string& name);

 private:
  bool load_file_source();  // 1.
  bool load_shared_file();  // 3.
  bool load_imds(HttpClient& http);

  StorageOptions opt_;
  std::mutex mu_;
  std::string source_;  // which source answered last
  SigningKey key_;
  std::map<std::string, std::string> settings_;
  // A file source: re-read when its identity (mtime, size, inode) changes, checked at most once a second.
  std::string file_;
  std::string file_stamp_;
  std::chrono::steady_clock::time_point checked_{};
  std::chrono::system_clock::time_point expires_{};  // metadata credentials
  bool resolved_ = false;
};

}  // namespace cairn::repo::storage::s3
