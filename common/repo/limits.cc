#include "common/repo/limits.h"

namespace cairn::repo {

size_t file_size_ceiling(FileType t) {
  switch (t) {
    case FileType::config:
      return kMaxConfigFile;
    case FileType::key:
      return kMaxKeySlotFile;
    case FileType::lock:
      return kMaxLockText;
    case FileType::snapshot:
      return kMaxSnapshotText;
    case FileType::index:
      return kMaxIndexText;
    case FileType::dict:
      return kMaxDictText;
    case FileType::claim:
      return 4096;
    case FileType::set_record:
      return kMaxSnapshotText;
    case FileType::pack:
    case FileType::exported:
      break;
  }
  return 0;
}

std::string file_kind_text(FileType t) {
  switch (t) {
    case FileType::config:
      return "the config";
    case FileType::key:
      return "a key slot";
    case FileType::lock:
      return "a lock file";
    case FileType::snapshot:
      return "a snapshot";
    case FileType::index:
      return "an index file";
    case FileType::dict:
      return "a compression dictionary";
    case FileType::claim:
      return "a claim";
    case FileType::set_record:
      return "a set record";
    case FileType::pack:
      return "a pack";
    case FileType::exported:
      return "an export";
  }
  return "a file";
}

}  // namespace cairn::repo
