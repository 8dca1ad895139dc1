#include "common/repo/prune.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "common/repo/snapshot.h"
#include "common/repo/tree.h"
#include "common/util/error.h"

namespace cairn::repo {

namespace {

using BlobSet = std::unordered_set<BlobId, BlobIdHash>;

Error refuse(const std::string& why) {
  return Error(Errc::corrupt, "prune refused: " + why +
                                  "; deleting data that a snapshot may still need would be unrecoverable (run 'cairnctl repo check')");
}

enum class Action { keep, repack, remove, unindexed, missing };

struct PackInfo {
  BlobId id{};
  bool indexed = false, on_disk = false;
  uint64_t disk_size = 0;
  std::vector<PackBlob> blobs;  // as the index describes the pack
  std::vector<bool> live;       // the chosen copy of a blob some snapshot needs
  uint64_t live_bytes = 0, dead_bytes = 0, live_blobs = 0, dead_blobs = 0;
  Action action = Action::keep;
};

// Walks every tree of every snapshot; every tree and content blob must be indexed
// and every tree must load and verify.
// Walks every tree of every snapshot: on a large repository the longest step
// before the repack, so a cancel is honoured at each tree.
BlobSet mark_used(Repository& r, const std::vector<Snapshot>& snaps, const std::atomic<bool>* cancel) {
  BlobSet used;
  std::vector<BlobId> todo;
  for (const auto& s : snaps) {
    if (used.count(s.tree)) continue;
    todo.push_back(s.tree);
    while (!todo.empty()) {
      BlobId id = todo.back();
      todo.pop_back();
      if (!used.insert(id).second) continue;
      if (cancel && *cancel) throw Error(Errc::interrupted, "prune interrupted; no pack or index was changed");
      Tree t;
      try {
        t = decode_tree_bytes(r.load_blob(id));
      } catch (const Error& e) {
        throw refuse("tree '" + id_hex(id) + "' of snapshot '" + s.id.substr(0, 8) + "' cannot be read: " + e.what());
      }
      for (const auto& n : t.nodes) {
        for (const auto& c : n.content) {
          if (!r.index().contains(c))
            throw refuse("blob '" + id_hex(c) + "' of '" + n.name + "' in snapshot '" + s.id.substr(0, 8) + "' is in no pack");
          used.insert(c);
        }
        if (n.subtree && !used.count(*n.subtree)) todo.push_back(*n.subtree);
      }
    }
  }
  return used;
}

void pick_copies(std::map<BlobId, PackInfo>& packs, const BlobSet& used) {
  // A blob stored twice keeps the copy in the pack that is otherwise most used, so
  // the other copy's pack is the one that empties.
  std::vector<PackInfo*> order;
  std::unordered_map<const PackInfo*, double> ratio;
  for (auto& [id, p] : packs) {
    p.live.assign(p.blobs.size(), false);
    if (!p.indexed || !p.on_disk) continue;
    uint64_t any = 0, all = 0;
    for (const auto& b : p.blobs) {
      all += b.length;
      if (used.count(b.id)) any += b.length;
    }
    ratio[&p] = all ? double(any) / double(all) : 0;
    order.push_back(&p);
  }
  std::stable_sort(order.begin(), order.end(), [&](const PackInfo* a, const PackInfo* b) { return ratio[a] > ratio[b]; });
  BlobSet chosen;
  for (PackInfo* p : order) {
    for (size_t i = 0; i < p->blobs.size(); ++i) {
      const auto& b = p->blobs[i];
      if (used.count(b.id) && chosen.insert(b.id).second) {
        p->live[i] = true;
        p->live_bytes += b.length;
        ++p->live_blobs;
      } else {
        p->dead_bytes += b.length;
        ++p->dead_blobs;
      }
    }
  }
  for (const auto& id : used)
    if (!chosen.count(id)) throw refuse("blob '" + id_hex(id) + "' is needed by a snapshot but its pack is missing from data/");
}

uint64_t estimate_pack_bytes(uint64_t blob_bytes, uint64_t blobs, uint64_t pack_size, uint64_t& packs) {
  packs = blob_bytes ? (blob_bytes + pack_size - 1) / pack_size : 0;
  return blob_bytes + blobs * kPackHeaderEntrySize + packs * (crypto::kAeadOverhead + kPackTrailerSize);
}

class Repacker {
 public:
  Repacker(Repository& r, PruneResult& res) : r_(r), res_(res) {}

  void add(const PackInfo& p, const std::atomic<bool>* cancel) {
    std::string name = id_hex(p.id);
    Bytes data = r_.backend().load({FileType::pack, name});
    for (size_t i = 0; i < p.blobs.size(); ++i) {
      if (!p.live[i]) continue;
      const PackBlob& b = p.blobs[i];
      if (uint64_t(b.offset) + b.length > data.size())
        throw refuse("pack '" + name + "' is shorter than its index entry for blob '" + id_hex(b.id) + "'");
      std::span<const uint8_t> sealed(data.data() + b.offset, b.length);
      // Verified before it is copied: a damaged blob must not move into a pack that
      // looks freshly written.
      Bytes plain;
      std::string why;
      if (!r_.open_blob(b, sealed, plain, why)) throw refuse("blob '" + id_hex(b.id) + "' in pack '" + name + "' " + why);
      PackBuilder& pb = builders_[int(b.type)];
      pb.add(b.id, b.type, b.flags, b.raw_length, sealed);
      if (pb.size() >= r_.params().pack_size) write(pb);
      if (cancel && *cancel) throw Error(Errc::interrupted, "prune interrupted while repacking");
    }
  }

  std::vector<std::pair<BlobId, std::vector<PackBlob>>> finish() {
    for (auto& pb : builders_)
      if (!pb.empty()) write(pb);
    return written_;  // kept: discard() takes them back if the lock is lost before the index is written
  }

  // Removes the packs written so far (a repack that stops: they are in no
  // index, and a prune stopped again and again must not pile them up).
  // Returns how many could not be removed; the next prune removes those.
  size_t discard() noexcept {
    size_t left = 0;
    for (const auto& pack : written_) {
      try {
        r_.backend().remove({FileType::pack, id_hex(pack.first)});
      } catch (...) {
        ++left;
      }
    }
    written_.clear();
    return left;
  }

 private:
  void write(PackBuilder& pb) {
    std::vector<PackBlob> blobs;
    Bytes pack = pb.finish(r_.aead(), blobs);
    BlobId pid = pack_id(pack);
    r_.backend().save({FileType::pack, id_hex(pid)}, pack);
    ++res_.written.packs;
    res_.written.blobs += blobs.size();
    res_.written.bytes += pack.size();
    written_.emplace_back(pid, std::move(blobs));
  }

  Repository& r_;
  PruneResult& res_;
  PackBuilder builders_[2];
  std::vector<std::pair<BlobId, std::vector<PackBlob>>> written_;
};

}  // namespace

PruneResult prune(Repository& r, const PruneOptions& opt) {
  auto started = std::chrono::steady_clock::now();
  auto warn = [&](const std::string& m) {
    if (opt.warn) opt.warn(m);
  };
  if (!(opt.max_unused_percent >= 0 && opt.max_unused_percent <= 100))
    throw Error(Errc::invalid_input, "--max-unused must be a percentage between 0 and 100");
  PruneResult res;

  // What is on disk.
  std::map<BlobId, PackInfo> packs;
  r.backend().list(FileType::pack, [&](const std::string& name, uint64_t size) {
    BlobId id;
    if (!parse_id(name, id)) {
      warn("'data/" + name.substr(0, 2) + "/" + name + "' is not named like a pack; left alone");
      return;
    }
    PackInfo& p = packs[id];
    p.id = id;
    p.on_disk = true;
    p.disk_size = size;
  });

  // What the index says. Every index file must be readable: a pack only an unreadable
  // index file names would otherwise look unreferenced and be deleted.
  std::vector<std::string> index_names = r.list(FileType::index);
  r.index().clear();
  for (const auto& name : index_names) {
    IndexFile f;
    try {
      f = decode_index_file_bytes(r.load_file(FileType::index, name), name);
    } catch (const Error& e) {
      throw Error(Errc::corrupt, std::string("prune refused: ") + e.what() +
                                     "; the packs it lists would look unused (run 'cairnctl repo repair index' first)");
    }
    for (auto& [pid, blobs] : f.packs) {
      PackInfo& p = packs[pid];
      p.id = pid;
      if (p.indexed) continue;  // listed by an earlier file too (an interrupted prune)
      p.indexed = true;
      p.blobs = std::move(blobs);
      if (p.on_disk) r.index().add_pack(pid, p.blobs);
    }
  }

  // What the snapshots need.
  std::vector<std::pair<std::string, std::string>> bad;
  std::vector<Snapshot> snaps = load_snapshots(r, &bad);
  for (const auto& [id, why] : bad)
    if (!opt.ignore_snapshots.count(id)) throw refuse("snapshot '" + id.substr(0, 8) + "' cannot be read: " + why);
  std::erase_if(snaps, [&](const Snapshot& s) { return opt.ignore_snapshots.count(s.id) != 0; });
  res.snapshots = snaps.size();
  BlobSet used = mark_used(r, snaps, opt.cancel);
  pick_copies(packs, used);

  // Classify.
  std::vector<PackInfo*> partly;
  uint64_t used_total = 0;
  for (auto& [id, p] : packs) {
    if (p.on_disk) {
      ++res.before.packs;
      res.before.bytes += p.disk_size;
    }
    res.before.blobs += p.blobs.size();
    if (!p.indexed) {
      p.action = Action::unindexed;
      ++res.unindexed.packs;
      res.unindexed.bytes += p.disk_size;
      res.unused_bytes_before += p.disk_size;
      continue;
    }
    if (!p.on_disk) {
      p.action = Action::missing;
      res.missing_packs.push_back(id_hex(id));
      warn("pack '" + id_hex(id) + "' is listed in the index but missing from data/; it is dropped from the index");
      continue;
    }
    res.used_blobs += p.live_blobs;
    res.used_bytes += p.live_bytes;
    used_total += p.live_bytes;
    res.unused_bytes_before += p.dead_bytes;
    if (p.live_blobs == 0)
      p.action = Action::remove;
    else if (p.dead_blobs == 0)
      p.action = Action::keep;
    else
      partly.push_back(&p);
  }

  // Repack the packs with the most unused bytes first, until what stays unused is
  // within the tolerance.
  std::stable_sort(partly.begin(), partly.end(), [](const PackInfo* a, const PackInfo* b) { return a->dead_bytes > b->dead_bytes; });
  uint64_t unused_left = 0;
  for (PackInfo* p : partly) unused_left += p->dead_bytes;
  double limit = opt.max_unused_percent / 100.0;
  for (PackInfo* p : partly) {
    if (double(unused_left) <= limit * double(used_total + unused_left)) break;
    p->action = Action::repack;
    unused_left -= p->dead_bytes;
  }
  res.unused_bytes_after = unused_left;

  std::vector<PackInfo*> repack, drop;
  for (auto& [id, p] : packs) {
    switch (p.action) {
      case Action::keep:
        ++res.kept.packs;
        res.kept.blobs += p.blobs.size();
        res.kept.bytes += p.disk_size;
        break;
      case Action::repack:
        ++res.repacked.packs;
        res.repacked.blobs += p.live_blobs;
        res.repacked.bytes += p.live_bytes;
        res.deleted.blobs += p.dead_blobs;
        res.deleted.bytes += p.dead_bytes;
        repack.push_back(&p);
        break;
      case Action::remove:
        ++res.deleted.packs;
        res.deleted.blobs += p.dead_blobs;
        res.deleted.bytes += p.dead_bytes;
        drop.push_back(&p);
        break;
      case Action::unindexed:
        drop.push_back(&p);
        break;
      case Action::missing:
        break;
    }
  }
  uint64_t freed = res.unindexed.bytes;
  for (PackInfo* p : repack) freed += p->disk_size;
  for (PackInfo* p : drop)
    if (p->action == Action::remove) freed += p->disk_size;

  bool rewrite_index = !repack.empty() || res.deleted.packs || !res.missing_packs.empty();
  if (opt.dry_run) {
    r.backend().list_leftovers([&](const std::string&, uint64_t size) {
      ++res.leftovers.packs;
      res.leftovers.bytes += size;
    });
    freed += res.leftovers.bytes;
    // Versions a store with Object Lock keeps of deleted objects (§ 7 below):
    // found, not asked whether they may go yet.
    if (r.backend().retains_deleted_versions())
      r.backend().list_deleted_versions([&](const KeptVersion& v) {
        if (v.marker) return;
        ++res.versions_removed.packs;
        res.versions_removed.bytes += v.size;
      });
    uint64_t tree_bytes = 0, tree_blobs = 0, n_tree = 0, n_data = 0;
    for (PackInfo* p : repack)
      for (size_t i = 0; i < p->blobs.size(); ++i)
        if (p->live[i] && p->blobs[i].type == BlobType::tree) {
          tree_bytes += p->blobs[i].length;
          ++tree_blobs;
        }
    res.written.bytes = estimate_pack_bytes(tree_bytes, tree_blobs, r.params().pack_size, n_tree) +
                        estimate_pack_bytes(res.repacked.bytes - tree_bytes, res.repacked.blobs - tree_blobs, r.params().pack_size, n_data);
    res.written.packs = n_tree + n_data;
    res.written.blobs = res.repacked.blobs;
    res.index_files_removed = rewrite_index ? index_names.size() : 0;
    res.index_files_written = rewrite_index && (res.kept.packs || res.written.packs) ? 1 : 0;
    res.bytes_freed = freed > res.written.bytes ? freed - res.written.bytes : 0;
    r.load_index();
    return res;
  }
  if (opt.cancel && *opt.cancel) throw Error(Errc::interrupted, "prune interrupted; no pack or index was changed");

  // 1. New packs.
  Repacker rp(r, res);
  Progress prog;
  prog.phase = "repack";
  prog.files_total = repack.size();
  prog.bytes_total = res.repacked.bytes;
  prog.totals_known = true;
  auto report = [&] {
    prog.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (opt.progress) opt.progress(prog);
  };
  std::vector<std::pair<BlobId, std::vector<PackBlob>>> new_packs;
  try {
    for (PackInfo* p : repack) {
      prog.current = id_hex(p->id);
      rp.add(*p, opt.cancel);
      ++prog.files_done;
      prog.bytes_done += p->live_bytes;
      report();
    }
    new_packs = rp.finish();
    if (opt.check_lock) opt.check_lock();
  } catch (const Error& e) {
    // Nothing is indexed or deleted yet: taking back the new packs leaves the
    // repository as it was.
    size_t left = rp.discard();
    std::string undo =
        left ? "; " + std::to_string(left) + " pack(s) it wrote could not be removed and are in no index (the next prune removes them)"
             : "; no pack or index was changed";
    throw Error(e.code(), e.what() + undo);
  } catch (...) {
    rp.discard();
    throw;
  }

  if (rewrite_index) {
    // 2. One index file describing every pack that remains.
    IndexFile f;
    f.supersedes = index_names;
    for (auto& [id, p] : packs)
      if (p.action == Action::keep) f.packs.emplace_back(id, p.blobs);
    for (auto& np : new_packs) f.packs.push_back(std::move(np));
    if (!f.packs.empty()) {
      r.write_index_file(f);
      res.index_files_written = 1;
    }
    // 3. The old index files; from here on the obsolete packs are unreferenced.
    for (const auto& name : index_names) {
      if (opt.check_lock) opt.check_lock();
      r.backend().remove({FileType::index, name});
      ++res.index_files_removed;
    }
  }

  // 4. Obsolete packs.
  for (PackInfo* p : repack) {
    if (opt.check_lock) opt.check_lock();
    r.backend().remove({FileType::pack, id_hex(p->id)});
  }
  for (PackInfo* p : drop) {
    if (opt.check_lock) opt.check_lock();
    r.backend().remove({FileType::pack, id_hex(p->id)});
  }

  // 5. Claims (§13.1) are a running backup's; prune holds the exclusive
  // lock, so none runs: every one left is a writer's that stopped.
  std::vector<std::string> claims;
  r.backend().list(FileType::claim, [&](const std::string& n, uint64_t) { claims.push_back(n); });
  for (const auto& n : claims) {
    if (opt.check_lock) opt.check_lock();
    r.backend().remove({FileType::claim, n});
  }

  // 6. Temporary files of writes that never finished (a backup or prune
  // killed between writing and renaming): under the exclusive lock no writer
  // is live, so every one is stale (issue 32: they stayed forever).
  std::vector<std::pair<std::string, uint64_t>> leftovers;
  r.backend().list_leftovers([&](const std::string& path, uint64_t size) { leftovers.emplace_back(path, size); });
  for (const auto& [path, size] : leftovers) {
    if (opt.check_lock) opt.check_lock();
    r.backend().remove_leftover(path);
    ++res.leftovers.packs;
    res.leftovers.bytes += size;
    freed += size;
  }

  // 7. A store with Object Lock keeps what a delete removes as a noncurrent
  // version until its retention ends (issue 34): without this the space of
  // every pack prune deleted stayed taken for good. Each version of a deleted
  // object is removed once the store allows it; one still retained is counted
  // with its date and tried again by the next prune. A key's delete markers go
  // only with its last version: removing the marker of a key that still has a
  // retained version would make that version the object again.
  bool versions_changed = false;
  if (r.backend().retains_deleted_versions()) try {
      std::string key;
      bool key_retained = false;
      r.backend().list_deleted_versions([&](const KeptVersion& v) {
        if (v.key != key) key = v.key, key_retained = false;
        if (v.marker && key_retained) return;
        if (opt.check_lock) opt.check_lock();
        std::string kept = r.backend().remove_version(v);
        if (kept.empty()) {
          versions_changed = true;
          if (v.marker) return;
          ++res.versions_removed.packs;
          res.versions_removed.bytes += v.size;
          freed += v.size;
          return;
        }
        key_retained = true;
        ++res.versions_retained.packs;
        res.versions_retained.bytes += v.size;
        if (kept.rfind("until ", 0) == 0)
          res.retained_until = std::max(res.retained_until, kept.substr(6));
        else
          ++res.legal_holds;
      });
      if (res.versions_retained.packs && opt.warn)
        opt.warn(std::to_string(res.versions_retained.packs) + " version(s) of deleted objects (" +
                 std::to_string(res.versions_retained.bytes) + " bytes) are retained by the store's Object Lock" +
                 (res.retained_until.empty() ? "" : ", the last until " + res.retained_until) +
                 (res.legal_holds ? ", " + std::to_string(res.legal_holds) + " under a legal hold" : "") +
                 ": a prune after that removes them");
    } catch (const Error& e) {
      // Credentials without the rights to list or remove versions: what prune
      // did above stands; the versions stay for the bucket's lifecycle rules.
      if (e.code() != Errc::denied) throw;
      if (opt.warn) opt.warn(std::string("the versions the store's Object Lock keeps of deleted objects were not removed: ") + e.what());
    }

  res.bytes_freed = freed > res.written.bytes ? freed - res.written.bytes : 0;
  res.changed = rewrite_index || !drop.empty() || !leftovers.empty() || versions_changed;
  prog.phase = "done";
  report();
  for (const auto& p : r.load_index()) warn("index file '" + p.index_file + "' is unusable after prune: " + p.message);
  return res;
}

void check_may_delete(Backend& be) {
  const Handle probe{FileType::index, "delete-probe"};  // index names are hex: never a repository's object
  be.remove(probe);
  try {
    for (const auto& v : be.versions(probe))
      if (v.marker) be.remove_version({object_path(probe), v.version, 0, true});
  } catch (const Error&) {
    // A marker left behind holds no bytes; prune's § 7 or the bucket's lifecycle rules remove it.
  }
}

}  // namespace cairn::repo
