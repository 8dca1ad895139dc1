#include "common/repo/verify.h"

#include <algorithm>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>

#include "common/repo/chunker.h"
#include "common/repo/memory.h"
#include "common/repo/snapshot.h"
#include "common/repo/tree.h"
#include "common/util/cpus.h"
#include "common/util/error.h"

namespace cairn::repo {

std::string verify_failure_line(const VerifyFailure& f) {
  if (f.kind == "too_deep") return (f.path.empty() ? std::string("a directory") : "'" + f.path + "'") + " " + f.reason;
  if (f.kind == "tree")
    return (f.path.empty() ? std::string("a directory listing") : "the listing of '" + f.path + "'") +
           (f.object.empty() ? std::string() : " (pack '" + f.object + "')") + " cannot be read: " + f.reason;
  std::string s = f.path.empty() ? std::string() : "'" + f.path + "': ";
  s += "blob '" + f.blob + "'";
  if (!f.object.empty()) s += " in pack '" + f.object + "'";
  return s + " " + f.reason;
}

namespace {

using Clock = std::chrono::steady_clock;

// Reads from a local disk: neighbouring blobs of one pack, up to kLocalRead and
// across gaps of at most kLocalGap, come with one read (as restore reads them).
// From an object store every request is a round trip: larger ranges, and the
// gaps between wanted blobs are fetched rather than asked for again.
constexpr uint64_t kLocalRead = 4u << 20, kLocalGap = 64u << 10;
constexpr uint64_t kRemoteRead = 32u << 20, kRemoteGap = 1u << 20;

std::string pack_file_of(const BlobId& id) {
  std::string h = id_hex(id);
  return "data/" + h.substr(0, 2) + "/" + h;
}

// The data blobs one pack holds for this snapshot.
struct PackPlan {
  BlobId pack{};
  std::vector<PackBlob> blobs;
  size_t compacted = 0;  // blobs.size() after the last sort-and-unique
  uint64_t bytes = 0;    // sealed bytes, once compacted for reading
};

void compact(PackPlan& p) {
  std::sort(p.blobs.begin(), p.blobs.end(), [](const PackBlob& a, const PackBlob& b) { return a.offset < b.offset; });
  p.blobs.erase(std::unique(p.blobs.begin(), p.blobs.end(), [](const PackBlob& a, const PackBlob& b) { return a.offset == b.offset; }),
                p.blobs.end());
  p.compacted = p.blobs.size();
}

class Verifier {
 public:
  Verifier(Repository& r, const VerifyOptions& o) : r_(r), o_(o) {}

  VerifyResult run(const std::string& ref) {
    Snapshot snap = load_snapshot(r_, resolve_snapshot(r_, ref));
    res_.snapshot_id = snap.id;
    sid_ = snap.id.substr(0, 8);
    // Stopped before res_ is handed out: its thread reads res_.
    std::optional<ProgressTicker> ticker;
    ticker.emplace(o_.progress_interval, o_.progress ? std::function<void()>([this] { report(); }) : nullptr);
    report();

    // Every tree once; each tree's files name the data blobs to read.
    TreeShapes shapes([this](const BlobId& id) { return load_tree(id); });
    TreeShape shape = shapes.of(snap.tree);
    res_.trees = shapes.trees() - tree_failures_;
    interrupted("before any data was read");
    if (root_failed_) {
      // Nothing else was planned: the restore could not even start.
      finish();
      ticker.reset();
      return std::move(res_);
    }
    if (shape.entries > o_.max_entries)
      throw Error(Errc::unsupported, "snapshot '" + sid_ + "' describes " +
                                         (shape.entries == UINT64_MAX ? std::string("more than 2^64") : std::to_string(shape.entries)) +
                                         " entries, more than the " + std::to_string(o_.max_entries) +
                                         " a restore walks (a tree whose directories share subtrees can describe more paths than any disk "
                                         "holds); run 'cairnctl repo check'");
    if (shape.height > kMaxTreeDepth)
      fail({"too_deep", "", "", "",
            "has directories nested deeper than " + std::to_string(kMaxTreeDepth) +
                " levels, the limit of every cairn command (docs/repository-format.md): a damaged or hostile snapshot"},
           nullptr);

    for (auto& p : packs_) {
      compact(p);
      for (const auto& b : p.blobs) {
        p.bytes += b.length;
        bytes_total_ += b.raw_length;
      }
    }
    // Largest first keeps the readers busy to the end.
    std::sort(packs_.begin(), packs_.end(), [](const PackPlan& a, const PackPlan& b) { return a.bytes > b.bytes; });
    res_.packs = packs_.size();
    planned_ = true;
    report();
    read_all();
    interrupted("while the data was read; nothing was changed");
    if (!res_.failures.empty()) name_paths(snap);
    finish();
    ticker.reset();
    return std::move(res_);
  }

 private:
  void interrupted(const char* when) const {
    if (o_.cancel && o_.cancel->load()) throw Error(Errc::interrupted, "verification of snapshot '" + sid_ + "' interrupted " + when);
  }

  void finish() {
    // What stops a walk first, then paths in order.
    auto rank = [](const VerifyFailure& f) { return f.kind == "too_deep" ? 0 : f.kind == "tree" ? 1 : 2; };
    std::unique_lock g(mu_);  // the progress ticker reads the failures
    std::stable_sort(res_.failures.begin(), res_.failures.end(), [&](const VerifyFailure& a, const VerifyFailure& b) {
      return rank(a) != rank(b) ? rank(a) < rank(b) : a.path < b.path;
    });
    res_.blobs = blobs_ok_;
    res_.bytes = bytes_done_;
    res_.bytes_read = read_bytes_;
    res_.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    g.unlock();
    done_ = true;
    report();
  }

  // Records a failure; the first kMaxVerifyFailures are listed (and their blob
  // remembered, to name the path that needs it), the rest counted.
  void fail(VerifyFailure f, const BlobId* id) {
    std::lock_guard g(mu_);
    if (res_.failures.size() >= kMaxVerifyFailures) {
      ++res_.failures_omitted;
      return;
    }
    if (id) (f.kind == "tree" ? bad_trees_ : bad_data_).emplace(*id, res_.failures.size());
    if (f.kind == "too_deep") too_deep_ = res_.failures.size();
    res_.failures.push_back(std::move(f));
  }

  std::optional<Tree> load_tree(const BlobId& id) {
    interrupted("before any data was read");
    const bool root = tree_loads_++ == 0;
    try {
      Tree t = decode_tree_bytes(r_.load_blob(id));
      plan(t);
      return t;
    } catch (const Error& e) {
      if (e.code() == Errc::unsupported) throw;  // the plan's bound
      auto loc = r_.index().lookup(id);
      ++tree_failures_;
      if (root) root_failed_ = true;
      fail({"tree", id_hex(id), loc ? pack_file_of(loc->pack) : "", root ? "/" : "", e.what()}, &id);
      return std::nullopt;
    }
  }

  // The data blobs of a tree's files, grouped by the pack that holds them.
  void plan(const Tree& t) {
    for (const auto& n : t.nodes) {
      if (n.type != NodeType::file) continue;
      for (const auto& id : n.content) {
        auto loc = r_.index().lookup(id);
        if (!loc) {
          fail({"data", id_hex(id), "", "", "is not in the index (run 'cairnctl repo check')"}, &id);
          continue;
        }
        if (loc->type != BlobType::data) {
          fail({"data", id_hex(id), pack_file_of(loc->pack), "", "is not a data blob"}, &id);
          continue;
        }
        auto [it, fresh] = pack_no_.try_emplace(loc->pack, packs_.size());
        if (fresh) {
          packs_.emplace_back();
          packs_.back().pack = loc->pack;
          plan_bytes_ += sizeof(PackPlan) + 64;
        }
        PackPlan& p = packs_[it->second];
        p.blobs.push_back(PackBlob{id, loc->type, loc->flags, loc->offset, loc->length, loc->raw_length});
        plan_bytes_ += sizeof(PackBlob);
        // A chunk many files share (zeros, a duplicated file) is kept once.
        if (p.blobs.size() >= 2 * p.compacted + 1024) {
          size_t before = p.blobs.size();
          compact(p);
          plan_bytes_ -= (before - p.blobs.size()) * sizeof(PackBlob);
        }
      }
    }
    if (plan_bytes_ > o_.max_plan_bytes)
      throw Error(Errc::unsupported, "snapshot '" + sid_ + "' needs more than " + std::to_string(o_.max_plan_bytes >> 20) +
                                         " MiB to plan reading it back, the bound for one restore; run 'cairnctl repo check'");
  }

  void read_all() {
    const bool remote = r_.backend().caps().remote;
    const uint64_t range = remote ? kRemoteRead : kLocalRead;
    unsigned n = o_.threads;
    if (!n) {
      // A reader holds one range (or one sealed blob) and one chunk. Reading is
      // decryption, decompression and hashing: one a CPU; from an object store,
      // which waits on the network, as many as restore's writers.
      const uint64_t budget = budget_bytes(o_.memory_budget);
      const uint64_t per = std::max<uint64_t>(range, kMaxChunkSize + (64u << 10)) + kMaxChunkSize;
      const unsigned want = remote ? restore_writers(budget, usable_cpus()) : std::clamp(usable_cpus(), 1u, 8u);
      n = unsigned(std::clamp<uint64_t>(budget / 2 / per, 1, want));
    }
    n = unsigned(std::max<size_t>(1, std::min<size_t>(n, packs_.size())));
    std::atomic<size_t> next{0};
    auto work = [&] {
      Bytes buf, out;
      for (size_t i; (i = next++) < packs_.size();) {
        if (o_.cancel && o_.cancel->load()) return;
        read_pack(packs_[i], range, remote ? kRemoteGap : kLocalGap, buf, out);
        // The plan of a pack read is not needed again.
        std::vector<PackBlob>().swap(packs_[i].blobs);
        if (buf.capacity() > 2 * range + (8u << 20)) Bytes().swap(buf);
      }
    };
    std::vector<std::jthread> pool;
    for (unsigned t = 1; t < n; ++t) pool.emplace_back(work);
    work();
  }

  void read_pack(const PackPlan& p, uint64_t max_read, uint64_t max_gap, Bytes& buf, Bytes& out) {
    const std::string pack = id_hex(p.pack), object = pack_file_of(p.pack);
    auto& be = r_.backend();
    const auto& bl = p.blobs;
    for (size_t i = 0; i < bl.size();) {
      if (o_.cancel && o_.cancel->load()) return;
      size_t j = i + 1;
      uint64_t start = bl[i].offset, end = start + bl[i].length;
      while (j < bl.size() && bl[j].offset >= end && bl[j].offset - end <= max_gap && bl[j].offset + bl[j].length - start <= max_read) {
        end = bl[j].offset + bl[j].length;
        ++j;
      }
      std::string cannot;
      try {
        be.load_into({FileType::pack, pack}, start, end - start, buf);
        if (buf.size() < end - start)
          cannot = "cannot be read: the pack ends at " + std::to_string(start + buf.size()) + " bytes, before the blob's end";
      } catch (const Error& e) {
        cannot = std::string("cannot be read: ") + e.what();
      }
      if (cannot.empty()) read_bytes_ += end - start;
      for (; i < j; ++i) {
        const PackBlob& b = bl[i];
        if (!cannot.empty()) {
          fail({"data", id_hex(b.id), object, "", cannot}, &b.id);
          continue;
        }
        std::span<const uint8_t> data;
        std::string why;
        if (!r_.open_blob_in_place(b, {buf.data() + (b.offset - start), b.length}, out, data, why)) {
          fail({"data", id_hex(b.id), object, "", why}, &b.id);
          continue;
        }
        if (data.size() != b.raw_length) {
          fail({"data", id_hex(b.id), object, "", "has the wrong length"}, &b.id);
          continue;
        }
        ++blobs_ok_;
        bytes_done_ += data.size();
      }
    }
  }

  // The first path that needs each listed damaged blob, by a walk like a
  // restore's (only when something failed: it reads the trees again).
  void name_paths(const Snapshot& snap) {
    struct Namer : TreeVisitor {
      std::vector<VerifyFailure>& f;
      std::unordered_map<BlobId, size_t, BlobIdHash> trees, data;
      size_t deep;  // the too_deep failure, until its path is known
      Namer(std::vector<VerifyFailure>& failures, const std::unordered_map<BlobId, size_t, BlobIdHash>& t,
            const std::unordered_map<BlobId, size_t, BlobIdHash>& d, size_t td)
          : f(failures), trees(t), data(d), deep(td) {}
      bool done() const { return trees.empty() && data.empty() && deep == SIZE_MAX; }
      bool enter(const std::string& path, Node& n, size_t) override {
        if (done()) return false;
        if (n.type == NodeType::dir && n.subtree) {
          if (auto it = trees.find(*n.subtree); it != trees.end()) {
            f[it->second].path = path;
            trees.erase(it);
          }
        } else if (n.type == NodeType::file) {
          for (const auto& id : n.content)
            if (auto it = data.find(id); it != data.end()) {
              f[it->second].path = path;
              data.erase(it);
            }
        }
        return true;
      }
      bool unreadable(const std::string&, const std::string&) override { return true; }
      bool too_deep(const std::string& path, const std::string&) override {
        if (deep != SIZE_MAX) f[deep].path = path;
        deep = SIZE_MAX;
        return true;
      }
    };
    std::unordered_map<BlobId, size_t, BlobIdHash> trees;
    for (const auto& [id, i] : bad_trees_)
      if (res_.failures[i].path.empty()) trees.emplace(id, i);
    Namer namer(res_.failures, trees, bad_data_, too_deep_);
    if (namer.done()) return;
    try {
      walk_snapshot(r_, snap, namer, {.max_entries = o_.max_entries});
    } catch (const Error&) {
      // The failures stand without their paths.
    }
  }

  Progress progress() {
    Progress p;
    p.phase = done_ ? "done" : "verify";
    p.bytes_done = bytes_done_;
    p.bytes_total = bytes_total_;
    p.totals_known = planned_;
    {
      std::lock_guard g(mu_);
      p.errors = res_.failures.size() + res_.failures_omitted;
    }
    p.elapsed_s = std::chrono::duration<double>(Clock::now() - start_).count();
    return p;
  }
  void report() {
    if (!o_.progress) return;
    std::lock_guard g(report_mu_);  // the ticker and this thread: one call at a time
    o_.progress(progress());
  }

  Repository& r_;
  const VerifyOptions& o_;
  VerifyResult res_;
  std::string sid_;
  Clock::time_point start_ = Clock::now();
  std::mutex mu_, report_mu_;
  std::unordered_map<BlobId, size_t, BlobIdHash> bad_trees_, bad_data_;  // listed failures, by blob
  size_t too_deep_ = SIZE_MAX;
  uint64_t tree_loads_ = 0, tree_failures_ = 0;
  bool root_failed_ = false;
  std::unordered_map<BlobId, size_t, BlobIdHash> pack_no_;
  std::vector<PackPlan> packs_;
  uint64_t plan_bytes_ = 0;
  std::atomic<uint64_t> bytes_total_{0}, bytes_done_{0}, read_bytes_{0}, blobs_ok_{0};
  std::atomic<bool> planned_{false}, done_{false};
};

}  // namespace

VerifyResult verify_snapshot(Repository& r, const std::string& snapshot, const VerifyOptions& opt) {
  Verifier v(r, opt);
  VerifyResult res = v.run(snapshot);
  return res;
}

}  // namespace cairn::repo
