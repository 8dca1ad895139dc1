// Snapshot copies between repositories (copy.h).
#include "common/repo/copy.h"

#include "common/repo/tree.h"
#include "common/util/error.h"

namespace cairn::repo {

BlobId SnapshotCopier::copy_data(const BlobId& id) {
  if (auto it = data_.find(id); it != data_.end()) return it->second;
  if (cancel_ && cancel_->load()) throw Error(Errc::interrupted, "copy interrupted");
  Bytes b = src_.load_blob(id);
  BlobId out{};
  if (dst_.save_blob(BlobType::data, b, out)) ++stats_.blobs_new;
  ++stats_.data_blobs;
  stats_.bytes += b.size();
  data_.emplace(id, out);
  return out;
}

BlobId SnapshotCopier::copy_tree(const BlobId& id) {
  if (auto it = trees_.find(id); it != trees_.end()) return it->second;
  Tree t = decode_tree_bytes(src_.load_blob(id));
  for (auto& n : t.nodes) {
    for (auto& c : n.content) c = copy_data(c);
    if (n.type == NodeType::file) {
      stats_.file_bytes += n.size;
      if (progress_) progress_(stats_);
    }
    if (n.subtree) n.subtree = copy_tree(*n.subtree);
  }
  std::string enc = encode_tree_bytes(t);
  BlobId out{};
  if (dst_.save_blob(BlobType::tree, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(enc.data()), enc.size()), out))
    ++stats_.blobs_new;
  ++stats_.trees;
  trees_.emplace(id, out);
  return out;
}

Snapshot SnapshotCopier::copy(const Snapshot& s) {
  Snapshot out = s;
  out.id.clear();
  out.parent.clear();
  out.tree = copy_tree(s.tree);
  dst_.flush();
  save_snapshot(dst_, out);
  ++stats_.snapshots;
  return out;
}

}  // namespace cairn::repo
