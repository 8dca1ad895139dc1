#include "common/repo/checker.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "common/repo/chunker.h"
#include "common/repo/limits.h"
#include "common/repo/memory.h"
#include "common/repo/snapshot.h"
#include "common/repo/tree.h"
#include "common/repo/walk.h"
#include "common/util/cpus.h"
#include "common/util/error.h"

namespace cairn::repo {

using nlohmann::json;

const char* severity_name(Severity s) { return s == Severity::error ? "error" : "warning"; }

size_t CheckReport::errors() const {
  return size_t(std::count_if(problems.begin(), problems.end(), [](const CheckProblem& p) { return p.severity == Severity::error; }));
}
size_t CheckReport::warnings() const { return problems.size() - errors(); }

json problem_json(const CheckProblem& p) {
  json j = {{"kind", p.kind},     {"severity", severity_name(p.severity)},
            {"object", p.object}, {"message", p.message},
            {"blobs", p.blobs},   {"snapshots", p.snapshots},
            {"paths", p.paths},   {"paths_omitted", p.paths_omitted}};
  if (!p.recoverable_version.empty()) j["recoverable_version"] = p.recoverable_version;
  return j;
}

std::string problem_line(const CheckProblem& p) {
  std::string s = std::string(severity_name(p.severity)) + ": " + p.message;
  if (!p.snapshots.empty()) {
    s += p.snapshots.size() == 1 ? "; affects snapshot " : "; affects snapshots ";
    for (size_t i = 0; i < p.snapshots.size(); ++i) s += (i ? ", " : "") + p.snapshots[i].substr(0, 8);
  }
  if (!p.paths.empty()) {
    // A line stays readable; --json lists every path.
    constexpr size_t kShown = 5;
    s += ": ";
    for (size_t i = 0; i < p.paths.size() && i < kShown; ++i) s += (i ? ", " : "") + std::string("'") + p.paths[i] + "'";
    uint64_t more = p.paths_omitted + (p.paths.size() > kShown ? p.paths.size() - kShown : 0);
    if (more) s += " and " + std::to_string(more) + " more";
  }
  return s;
}

namespace {

constexpr const char* kRepairHint = "run 'cairnctl repo repair index'";

std::string pack_object(const std::string& hex) { return "data/" + hex.substr(0, 2) + "/" + hex; }
std::string pack_object(const BlobId& id) { return pack_object(id_hex(id)); }

// What the index files say about one pack; enough to check its size and header.
struct IndexedPack {
  uint64_t max_end = 0;    // end of the last blob any listing places in it
  uint64_t max_count = 0;  // blobs in the longest listing
  uint64_t owned = 0;      // blobs the merged index resolves to this pack
};

class Checker {
 public:
  Checker(Repository& r, const CheckOptions& o) : r_(r), o_(o) {}

  CheckReport run() {
    auto t0 = std::chrono::steady_clock::now();
    // A check verifies the store: no entry of the local cache is read (storage/cache.h).
    struct CacheReadsOff {
      Repository& r;
      explicit CacheReadsOff(Repository& x) : r(x) { r.set_cache_reads(false); }
      ~CacheReadsOff() { r.set_cache_reads(true); }
    } cache_off(r_);
    check_earlier_versions();
    check_keys();
    check_dictionaries();
    load_index();
    if (o_.index_loaded) o_.index_loaded(r_.index());
    check_packs();
    check_dictionary_needs();
    check_leftovers();
    check_snapshots();
    if (o_.read_data) {
      read_data();
      verify_damaged_headers();
    }
    if (!bad_.empty()) attribute();
    report_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return std::move(report_);
  }

 private:
  // The index says which blobs were compressed with a dictionary (their flag),
  // so a plain check knows the repository needs one without reading data
  // (issue 32: a deleted dictionary was found only by --read-data). Which
  // dictionary a blob names is inside its sealed frame: read-data checks that.
  void check_dictionary_needs() {
    if (dictionary_blobs_ == 0 || r_.dictionary_count() > 0) return;
    add("dictionary_missing", Severity::error, "dicts/",
        std::to_string(dictionary_blobs_) +
            " blob(s) were compressed with a dictionary and dicts/ holds none: "
            "they cannot be read; restore dicts/ from a copy of the repository");
  }

  // Objects the open read from an earlier version the store keeps, because the
  // current one is damaged: an error until `check --recover` puts them back.
  void check_earlier_versions() {
    for (const auto& u : r_.earlier_versions_used()) {
      const std::string obj = u.type == FileType::config ? "config" : std::string(file_type_name(u.type)) + "/" + u.name;
      CheckProblem p;
      p.kind = u.type == FileType::config ? "config_damaged" : "key_slot";
      p.object = obj;
      p.message = "'" + obj + "' " + (u.why.rfind("'", 0) == 0 ? "is damaged: " + u.why : u.why) +
                  "; the repository was opened with the earlier version " + u.version +
                  " the store keeps ('cairnctl repo check --recover' puts it back)";
      p.recoverable_version = u.version;
      add(std::move(p));
    }
  }

  // Temporary files of writes a killed backup or prune never finished: no
  // snapshot needs them, prune removes them (issue 32: they stayed unnoticed).
  void check_leftovers() {
    uint64_t n = 0, bytes = 0;
    std::string first;
    r_.backend().list_leftovers([&](const std::string& p, uint64_t size) {
      if (n++ == 0) first = p;
      bytes += size;
    });
    if (n)
      add("temporary_leftover", Severity::warning, first,
          std::to_string(n) + " temporary file(s), " + std::to_string(bytes) +
              " bytes, left by writes that never finished (a backup or prune killed); no snapshot needs them and "
              "'cairnctl repo prune' removes them");
  }

  size_t add(CheckProblem p) {
    std::lock_guard lk(mu_);
    report_.problems.push_back(std::move(p));
    return report_.problems.size() - 1;
  }
  size_t add(const char* kind, Severity sev, std::string object, std::string message, std::vector<std::string> blobs = {}) {
    CheckProblem p;
    p.kind = kind;
    p.severity = sev;
    p.object = std::move(object);
    p.message = std::move(message);
    p.blobs = std::move(blobs);
    return add(std::move(p));
  }
  // Records that a blob is unusable and which problem explains it, so its users get
  // named. Returns false when the blob was already known bad. Caller holds mu_ or is
  // single-threaded.
  bool mark_bad(const BlobId& id, size_t problem) {
    auto [it, fresh] = bad_.try_emplace(id, problem);
    return fresh;
  }
  void interrupted() const {
    if (o_.cancel && o_.cancel->load()) throw Error(Errc::interrupted, "check interrupted; nothing was changed");
  }

  void check_keys() {
    auto& be = r_.backend();
    std::vector<std::pair<std::string, uint64_t>> names;
    be.list(FileType::key, [&](const std::string& n, uint64_t size) { names.emplace_back(n, size); });
    std::sort(names.begin(), names.end());
    for (const auto& [name, size] : names) {
      std::string obj = "keys/" + name;
      try {
        // Checked before it is read: a slot is a small JSON file (limits.h).
        if (size > kMaxKeySlotFile)
          throw Error(Errc::corrupt, "key slot '" + obj + "' is " + std::to_string(size) + " bytes, over the " +
                                         std::to_string(kMaxKeySlotFile) + "-byte ceiling of a key slot");
        Bytes raw = be.load({FileType::key, name});
        if (to_hex(crypto::sha256(raw)) != name) {
          add("key_slot", Severity::warning, obj,
              "key slot '" + obj +
                  "' does not match its name (damaged); other slots still open the repository: "
                  "add a new key with 'cairnctl repo key add' and remove this one");
          continue;
        }
        json j = json::parse(raw.begin(), raw.end());
        if (!j.is_object() || !j.contains("kdf") || !j.contains("salt") || !j.contains("data"))
          add("key_slot", Severity::warning, obj, "key slot '" + obj + "' lacks required fields; it cannot open the repository");
      } catch (const std::exception& e) {
        add("key_slot", Severity::warning, obj,
            "key slot '" + obj + "' is unreadable (" + e.what() + "); other slots still open the repository");
      }
    }
  }

  // Compression dictionaries were loaded (and checked) when the repository was
  // opened: a damaged one is an error, since every blob compressed with it is
  // unreadable (read_data names them).
  void check_dictionaries() {
    for (const auto& why : r_.dictionary_problems()) {
      std::string obj = "dicts/";
      if (auto q = why.find("'dicts/"); q != std::string::npos) obj = why.substr(q + 1, why.find('\'', q + 1) - q - 1);
      add("dictionary_damaged", Severity::error, obj,
          why + "; blobs compressed with it cannot be read: restore dicts/ from a copy of the repository");
    }
  }

  // Reads every index file once: fills r_.index() (as Repository::load_index does)
  // and keeps per-pack summaries for the size and header checks.
  void load_index() {
    Index& idx = r_.index();
    idx.clear();
    for (const auto& name : r_.list(FileType::index)) {
      interrupted();
      ++report_.index_files;
      IndexFile f;
      try {
        f = decode_index_file_bytes(r_.load_file(FileType::index, name), name);
      } catch (const std::exception& e) {
        // load_json names the file first; say it once.
        std::string why = e.what(), self = "'index/" + name + "' ";
        if (why.rfind(self, 0) == 0) why.erase(0, self.size());
        add("index_damaged", Severity::error, "index/" + name,
            "index/" + name + " is damaged: " + why + "; the packs it listed are not found: " + kRepairHint);
        continue;
      }
      size_t blobs_in_file = 0;
      for (const auto& [pack, blobs] : f.packs) blobs_in_file += blobs.size();
      idx.note_file(blobs_in_file);
      for (const auto& [pack, blobs] : f.packs) {
        IndexedPack& s = indexed_[pack];
        uint64_t fresh = 0;
        for (const auto& b : blobs) {
          s.max_end = std::max<uint64_t>(s.max_end, uint64_t(b.offset) + b.length);
          if (!idx.contains(b.id)) {
            ++fresh;
            if (b.flags & kBlobDictionary) ++dictionary_blobs_;
          }
        }
        s.max_count = std::max<uint64_t>(s.max_count, blobs.size());
        s.owned += fresh;
        idx.add_pack(pack, blobs);
      }
    }
    report_.blobs = idx.blob_count();
  }

  void check_packs() {
    r_.backend().list(FileType::pack, [&](const std::string& name, uint64_t size) {
      BlobId id;
      if (!parse_id(name, id)) {
        add("pack_unexpected", Severity::warning, "data/" + name.substr(0, 2) + "/" + name,
            "'" + name + "' in the data directory is not a pack written by cairn; move it out of the repository");
        return;
      }
      present_[id] = size;
      report_.pack_bytes += size;
    });
    report_.packs = present_.size();
    for (const auto& [pack, s] : indexed_) {
      auto it = present_.find(pack);
      if (it == present_.end()) {
        pack_problem_[pack] = add("pack_missing", Severity::error, pack_object(pack),
                                  "pack " + pack_object(pack) + " is named by the index but missing: the blobs in it are lost");
        continue;
      }
      uint64_t need = s.max_end + s.max_count * kPackHeaderEntrySize + crypto::kAeadOverhead + kPackTrailerSize;
      if (it->second < need)
        pack_problem_[pack] = add("pack_truncated", Severity::error, pack_object(pack),
                                  "pack " + pack_object(pack) + " is " + std::to_string(it->second) +
                                      " bytes, but the index needs at least " + std::to_string(need) + " (truncated)");
    }
    for (const auto& [pack, size] : present_) {
      if (indexed_.count(pack)) continue;
      interrupted();
      std::string hex = id_hex(pack);
      try {
        // Reading the header tells which missing blobs a repair would bring back.
        for (const auto& b : read_pack_header(r_.backend(), hex, r_.aead(), size)) orphan_.try_emplace(b.id, pack, b);
        pack_problem_[pack] = add("pack_unindexed", Severity::warning, pack_object(hex),
                                  "pack " + hex + " is not in any index (an interrupted backup, or a lost index file): " + kRepairHint);
      } catch (const std::exception& e) {
        add("pack_damaged", Severity::error, pack_object(hex),
            "pack " + pack_object(hex) + " is not in any index and its header is unreadable (" + e.what() + ")");
      }
    }
  }

  // Why a blob the index names cannot be read without touching it, or empty.
  // Registers the blob under the problem that explains it.
  bool blob_reachable(const BlobId& id, BlobType want, const std::optional<BlobLocation>& loc) {
    const char* what = want == BlobType::tree ? "tree blob " : "blob ";
    if (!loc) {
      if (bad_.count(id)) return false;
      if (auto o = orphan_.find(id); o != orphan_.end()) {
        size_t pi = pack_problem_.at(o->second.first);
        CheckProblem& p = report_.problems[pi];
        if (p.severity == Severity::warning) {
          // Snapshots need it: no longer an interrupted backup's leftovers.
          p.severity = Severity::error;
          p.message = "pack " + id_hex(o->second.first) + " is not in any index, but snapshots use blobs in it: " + kRepairHint;
        }
        p.blobs.push_back(id_hex(id));
        mark_bad(id, pi);
        return false;
      }
      mark_bad(id, add(want == BlobType::tree ? "tree_missing" : "blob_missing", Severity::error, "blob/" + id_hex(id),
                       std::string(what) + id_hex(id) + " is in no index and no pack: its data is lost", {id_hex(id)}));
      return false;
    }
    auto pp = pack_problem_.find(loc->pack);
    if (pp != pack_problem_.end()) {
      auto sz = present_.find(loc->pack);
      bool lost = sz == present_.end() || uint64_t(loc->offset) + loc->length > sz->second;
      if (lost) {
        if (mark_bad(id, pp->second)) report_.problems[pp->second].blobs.push_back(id_hex(id));
        return false;
      }
    }
    if (loc->type != want) {
      if (bad_.count(id)) return false;
      mark_bad(id, add(want == BlobType::tree ? "tree_damaged" : "blob_damaged", Severity::error, pack_object(loc->pack),
                       std::string(what) + id_hex(id) + " is stored as the wrong type in pack " + id_hex(loc->pack), {id_hex(id)}));
      return false;
    }
    return true;
  }

  // The tree's nodes as they are read: a directory of 200,000 entries costs its
  // text, not its nodes besides (TreeReader).
  std::optional<TreeReader> open_tree(const BlobId& id, std::optional<BlobLocation>& loc) {
    loc = r_.index().lookup(id);
    if (!blob_reachable(id, BlobType::tree, loc)) {
      if (auto t = orphan_tree(id)) return TreeReader(std::move(*t));
      return std::nullopt;
    }
    try {
      return r_.open_tree(id);
    } catch (const std::exception& e) {
      tree_damaged(id, loc, e.what());
      return std::nullopt;
    }
  }
  void tree_damaged(const BlobId& id, const std::optional<BlobLocation>& loc, const std::string& why) {
    if (!bad_.count(id))
      mark_bad(id, add("tree_damaged", Severity::error, loc ? pack_object(loc->pack) : "blob/" + id_hex(id),
                       "tree " + id_hex(id) + " is damaged: " + why, {id_hex(id)}));
  }

  // A tree no index lists, read from the unindexed pack that holds it: the walk goes
  // on below it, so the report names the files a repair would bring back.
  std::optional<Tree> orphan_tree(const BlobId& id) {
    auto o = orphan_.find(id);
    if (o == orphan_.end() || o->second.second.type != BlobType::tree) return std::nullopt;
    const auto& [pack, b] = o->second;
    try {
      Bytes sealed = r_.backend().load({FileType::pack, id_hex(pack)}, b.offset, b.length), out;
      std::string why;
      if (!r_.open_blob(b, sealed, out, why)) return std::nullopt;
      return decode_tree_bytes(out);
    } catch (const std::exception&) {
      return std::nullopt;  // read-data names it
    }
  }

  void check_snapshots() {
    for (const auto& name : r_.list(FileType::snapshot)) {
      try {
        snaps_.push_back(load_snapshot(r_, name));
      } catch (const std::exception& e) {
        add("snapshot_damaged", Severity::error, "snapshots/" + name, "snapshot " + name.substr(0, 8) + " is unreadable: " + e.what());
      }
    }
    report_.snapshots = snaps_.size();
    // Trees are shared between snapshots: each is loaded once here, without
    // recursion, and each snapshot's shape (depth, entries) is counted from the trees'
    // shapes, so a tree bomb costs what its blobs cost. Users of bad blobs are named
    // later, by a second walk that only runs when there is damage.
    TreeShapes shapes(TreeShapes::Lister([this](const BlobId& id) -> std::optional<TreeListing> {
      interrupted();
      std::optional<BlobLocation> loc;
      auto reader = open_tree(id, loc);
      if (!reader) return std::nullopt;
      ++report_.trees;
      TreeListing l;
      Node n;
      try {
        while (reader->next(n)) {
          ++l.entries;
          if (n.type == NodeType::file)
            for (const auto& c : n.content) blob_reachable(c, BlobType::data, r_.index().lookup(c));
          else if (n.type == NodeType::dir && n.subtree)
            l.subtrees.push_back(*n.subtree);
        }
      } catch (const Error& e) {
        // Counted as unreadable, as one that fails before its first node.
        tree_damaged(id, loc, e.what());
        --report_.trees;
        return std::nullopt;
      }
      return l;
    }));
    for (const auto& s : snaps_) {
      TreeShape shape = shapes.of(s.tree);
      std::string sid = s.id.substr(0, 8);
      if (shape.height > kMaxTreeDepth) {
        CheckProblem p;
        p.kind = "tree_too_deep";
        p.object = "snapshots/" + s.id;
        p.message = "snapshot " + sid + " nests directories deeper than " + std::to_string(kMaxTreeDepth) +
                    " levels, the limit of every cairn command: ls and restore refuse what lies below (a damaged or hostile "
                    "snapshot; restore the rest with --exclude, or forget it)";
        p.snapshots = {s.id};
        add(std::move(p));
      }
      if (shape.entries > kMaxWalkEntries) {
        CheckProblem p;
        p.kind = "snapshot_too_large";
        p.severity = Severity::warning;
        p.object = "snapshots/" + s.id;
        p.message = "snapshot " + sid + " describes " +
                    (shape.entries == UINT64_MAX ? std::string("more than 2^64") : std::to_string(shape.entries)) +
                    " entries, more than ls and restore walk by default (" + std::to_string(kMaxWalkEntries) +
                    "): if no backup held that many files it is a tree bomb, forget it; otherwise use --max-entries";
        p.snapshots = {s.id};
        add(std::move(p));
      }
    }
  }

  void progress(bool final) {
    if (!o_.progress) return;
    // Callers' callbacks (the CLI's printer) need not be thread-safe: one at a time,
    // and a thread that finds another reporting just goes on working.
    std::unique_lock emit(progress_mu_, std::defer_lock);
    if (final)
      emit.lock();
    else if (!emit.try_lock())
      return;
    auto now = std::chrono::steady_clock::now();
    Progress p;
    {
      std::lock_guard lk(mu_);
      if (!final && now - last_progress_ < o_.progress_interval) return;
      last_progress_ = now;
      p.phase = final ? "done" : "check";
      p.files_done = report_.packs_read;
      p.files_total = read_total_packs_;
      p.bytes_done = report_.bytes_read;
      p.bytes_total = read_total_bytes_;
      p.totals_known = true;
      p.errors = report_.errors();
      p.elapsed_s = std::chrono::duration<double>(now - read_start_).count();
      p.current = current_;
    }
    o_.progress(p);
  }

  void read_data() {
    std::vector<std::pair<BlobId, uint64_t>> packs(present_.begin(), present_.end());
    // Largest first keeps the threads busy to the end.
    std::sort(packs.begin(), packs.end(), [](auto& a, auto& b) { return a.second > b.second; });
    read_total_packs_ = packs.size();
    read_total_bytes_ = report_.pack_bytes;
    read_start_ = std::chrono::steady_clock::now();
    last_progress_ = read_start_;
    unsigned n = o_.threads;
    if (!n) {
      // A thread holds one pack (the largest present, at worst) and one chunk,
      // beside what the repository needs (memory.h).
      uint64_t largest = packs.empty() ? 0 : packs.front().second;
      n = read_data_threads(budget_bytes(o_.memory_budget), usable_cpus(), largest,
                            repository_needs(r_.index(), MemoryUse::read_data, 1, largest));
    }
    n = unsigned(std::min<size_t>(n, std::max<size_t>(packs.size(), 1)));
    std::atomic<size_t> next{0};
    std::atomic<bool> stop{false};
    auto work = [&] {
      for (size_t i; !stop && (i = next++) < packs.size();) {
        if (o_.cancel && o_.cancel->load()) {
          stop = true;
          break;
        }
        verify_pack(packs[i].first);
        progress(false);
      }
    };
    {
      std::vector<std::jthread> pool;
      for (unsigned t = 1; t < n; ++t) pool.emplace_back(work);
      work();
    }
    interrupted();
    progress(true);
  }

  // One pack at a time per thread: memory is bounded by threads x pack size.
  void verify_pack(const BlobId& pack) {
    std::string hex = id_hex(pack);
    {
      std::lock_guard lk(mu_);
      current_ = pack_object(hex);
    }
    Bytes data;
    try {
      data = r_.backend().load({FileType::pack, hex});
    } catch (const std::exception& e) {
      add("pack_damaged", Severity::error, pack_object(hex), "pack " + pack_object(hex) + " cannot be read: " + e.what());
      return;
    }
    {
      std::lock_guard lk(mu_);
      ++report_.packs_read;
      report_.bytes_read += data.size();
    }
    if (pack_id(data) != pack)
      add("pack_damaged", Severity::error, pack_object(hex),
          "pack " + pack_object(hex) + " does not match its name (damaged or truncated)");
    std::vector<PackBlob> header;
    try {
      header = parse_pack_header(data, r_.aead(), hex);
    } catch (const std::exception& e) {
      add("pack_header", Severity::error, pack_object(hex), std::string(e.what()) + "; its blobs are checked against the index instead");
      std::lock_guard lk(mu_);
      damaged_headers_.push_back(pack);
      return;
    }
    const Index& idx = r_.index();
    bool indexed = indexed_.count(pack) != 0;
    uint64_t owned_seen = 0, unlisted = 0;
    for (const auto& b : header) {
      std::string why;
      auto loc = idx.lookup(b.id);
      bool ok = r_.verify_blob(b, std::span<const uint8_t>(data).subspan(b.offset, b.length), why);
      {
        std::lock_guard lk(mu_);
        ++report_.blobs_verified;
      }
      bool elsewhere = loc && loc->pack != pack;
      if (!ok) report_damaged_blob(pack, b, why, elsewhere ? &loc->pack : nullptr);
      if (!loc) {
        ++unlisted;
      } else if (loc->pack == pack) {
        ++owned_seen;
        if (loc->offset != b.offset || loc->length != b.length || loc->type != b.type || loc->flags != b.flags ||
            loc->raw_length != b.raw_length) {
          std::lock_guard lk(mu_);
          if (!bad_.count(b.id)) {
            size_t pi =
                add_locked("pack_index_mismatch", pack_object(hex),
                           "the index entry for blob " + id_hex(b.id) + " disagrees with the header of pack " + hex + ": " + kRepairHint,
                           {id_hex(b.id)});
            mark_bad(b.id, pi);
          }
        }
      }
    }
    if (indexed && unlisted)
      add("blob_unindexed", Severity::warning, pack_object(hex),
          "pack " + hex + " holds " + std::to_string(unlisted) + " blobs that no index lists: " + kRepairHint);
    if (indexed && owned_seen < indexed_.at(pack).owned)
      add("pack_index_mismatch", Severity::error, pack_object(hex),
          "the index lists " + std::to_string(indexed_.at(pack).owned - owned_seen) + " blobs in pack " + hex +
              " that its header does not have: " + kRepairHint);
  }

  size_t add_locked(const char* kind, std::string object, std::string message, std::vector<std::string> blobs) {
    CheckProblem p;
    p.kind = kind;
    p.object = std::move(object);
    p.message = std::move(message);
    p.blobs = std::move(blobs);
    report_.problems.push_back(std::move(p));
    return report_.problems.size() - 1;
  }

  void report_damaged_blob(const BlobId& pack, const PackBlob& b, const std::string& why, const BlobId* used_copy) {
    std::lock_guard lk(mu_);
    if (bad_.count(b.id)) return;  // already explained (a tree found damaged while walking)
    std::string msg =
        std::string(b.type == BlobType::tree ? "tree blob " : "blob ") + id_hex(b.id) + " in pack " + pack_object(pack) + " " + why;
    if (used_copy) {
      // The index reads another copy; this one harms nobody but is still damage.
      add_locked("blob_damaged", pack_object(pack), msg + " (unused: the index reads the copy in pack " + id_hex(*used_copy) + ")",
                 {id_hex(b.id)});
      return;
    }
    mark_bad(b.id, add_locked("blob_damaged", pack_object(pack), msg, {id_hex(b.id)}));
  }

  // Packs whose header is damaged: verify the blobs the index places in them, read
  // one by one. Rare, so the index files are read again rather than kept in memory.
  void verify_damaged_headers() {
    if (damaged_headers_.empty()) return;
    std::unordered_set<BlobId, BlobIdHash> want(damaged_headers_.begin(), damaged_headers_.end());
    std::unordered_set<BlobId, BlobIdHash> done;
    for (const auto& name : r_.list(FileType::index)) {
      IndexFile f;
      try {
        f = decode_index_file_bytes(r_.load_file(FileType::index, name), name);
      } catch (const std::exception&) {
        continue;  // reported already
      }
      for (const auto& [pack, blobs] : f.packs) {
        if (!want.count(pack)) continue;
        std::string hex = id_hex(pack);
        for (const auto& b : blobs) {
          interrupted();
          if (!done.insert(b.id).second || bad_.count(b.id)) continue;
          Bytes sealed, out;
          std::string why;
          try {
            sealed = r_.backend().load({FileType::pack, hex}, b.offset, b.length);
            if (r_.open_blob(b, sealed, out, why)) continue;
          } catch (const std::exception& e) {
            why = std::string("cannot be read: ") + e.what();
          }
          auto loc = r_.index().lookup(b.id);
          report_damaged_blob(pack, b, why, loc && loc->pack != pack ? &loc->pack : nullptr);
        }
      }
    }
  }

  void attribute_use(const BlobId& id, const std::string& snap, const std::string& path) {
    CheckProblem& p = report_.problems[bad_.at(id)];
    if (std::find(p.snapshots.begin(), p.snapshots.end(), snap) == p.snapshots.end()) p.snapshots.push_back(snap);
    if (std::find(p.paths.begin(), p.paths.end(), path) != p.paths.end()) return;
    if (p.paths.size() < kMaxPathsPerProblem)
      p.paths.push_back(path);
    else
      ++p.paths_omitted;
  }

  // Names the users of bad blobs in one snapshot, without recursion. Clean subtrees
  // are remembered and skipped. Paths are expanded (a damaged blob shared by two
  // directories is named under both) up to kAttributeEntries entries per snapshot;
  // past that a subtree already walked in this snapshot is not walked again, so a
  // tree bomb costs what its blobs cost. Nothing below kMaxTreeDepth is read.
  static constexpr uint64_t kAttributeEntries = 100'000;
  // The root tree is the whole snapshot: named by what it backed up (issue
  // 32: "/" read as the host's root).
  static std::string root_name(const Snapshot& s) {
    std::string out;
    for (const auto& p : s.paths) out += (out.empty() ? "" : ", ") + p;
    return "the whole snapshot (" + (out.empty() ? std::string("/") : out) + ")";
  }
  void attribute_snapshot(const Snapshot& s) {
    struct Frame {
      BlobId id;
      std::optional<Tree> tree;
      size_t next = 0, parent_len = 0;
      bool any = false;
    };
    std::unordered_set<BlobId, BlobIdHash> walked;
    uint64_t entries = 0;
    std::string path;
    std::vector<Frame> stack;
    // Opens a tree: false when there is nothing to walk below it (any: bad below).
    auto open = [&](const BlobId& id, Frame& f, bool& any) -> bool {
      f.id = id;
      if (bad_.count(id)) {
        attribute_use(id, s.id, path.empty() ? root_name(s) : path);
        any = f.any = true;
        if (entries > kAttributeEntries && walked.count(id)) return false;
        walked.insert(id);
        f.tree = orphan_tree(id);
        return bool(f.tree);
      }
      if (clean_.count(id)) return false;
      if (entries > kAttributeEntries && walked.count(id)) {
        any = true;  // not clean (or it would be in clean_): its uses are named already
        return false;
      }
      interrupted();
      try {
        f.tree = decode_tree_bytes(r_.load_blob(id));
      } catch (const std::exception&) {
        return false;  // reported by the first walk
      }
      walked.insert(id);
      return true;
    };
    {
      Frame root;
      bool any = false;
      if (!open(s.tree, root, any)) return;
      stack.push_back(std::move(root));
    }
    while (!stack.empty()) {
      Frame& f = stack.back();
      if (f.next == f.tree->nodes.size()) {
        Frame done = std::move(f);
        stack.pop_back();
        if (!done.any) clean_.insert(done.id);
        if (!stack.empty()) stack.back().any |= done.any;
        path.resize(done.parent_len);
        continue;
      }
      const Node& n = f.tree->nodes[f.next++];
      ++entries;
      size_t len = path.size();
      if (n.type == NodeType::file) {
        path += '/';
        path += n.name;
        for (const auto& c : n.content)
          if (bad_.count(c)) {
            attribute_use(c, s.id, path);
            f.any = true;
          }
        path.resize(len);
      } else if (n.type == NodeType::dir && n.subtree && stack.size() < kMaxTreeDepth) {
        path += '/';
        path += n.name;
        Frame next;
        next.parent_len = len;
        bool any = false;
        BlobId sub = *n.subtree;
        if (open(sub, next, any)) {
          stack.push_back(std::move(next));
          continue;
        }
        f.any |= any;
        path.resize(len);
      }
    }
  }

  void attribute() {
    for (const auto& s : snaps_) attribute_snapshot(s);
  }

  Repository& r_;
  const CheckOptions& o_;
  CheckReport report_;
  std::mutex mu_, progress_mu_;
  std::unordered_map<BlobId, IndexedPack, BlobIdHash> indexed_;
  uint64_t dictionary_blobs_ = 0;                                               // indexed blobs compressed with a dictionary
  std::unordered_map<BlobId, uint64_t, BlobIdHash> present_;                    // packs in the backend and their sizes
  std::unordered_map<BlobId, size_t, BlobIdHash> pack_problem_;                 // missing, truncated or unindexed pack -> problem
  std::unordered_map<BlobId, std::pair<BlobId, PackBlob>, BlobIdHash> orphan_;  // blob -> unindexed pack holding it
  std::unordered_map<BlobId, size_t, BlobIdHash> bad_;                          // unusable blob -> problem explaining it
  std::unordered_set<BlobId, BlobIdHash> clean_;                                // trees with nothing bad below
  std::vector<Snapshot> snaps_;
  std::vector<BlobId> damaged_headers_;
  uint64_t read_total_packs_ = 0, read_total_bytes_ = 0;
  std::chrono::steady_clock::time_point read_start_, last_progress_;
  std::string current_;
};

}  // namespace

CheckReport check(Repository& r, const CheckOptions& opt) { return Checker(r, opt).run(); }

RepairIndexResult repair_index(Repository& r, const ProgressFn& progress, const std::atomic<bool>* cancel) {
  auto t0 = std::chrono::steady_clock::now();
  RepairIndexResult res;
  std::vector<std::string> old = r.list(FileType::index);
  std::vector<std::pair<std::string, uint64_t>> packs;
  uint64_t total = 0;
  r.backend().list(FileType::pack, [&](const std::string& name, uint64_t size) {
    BlobId id;
    if (!parse_id(name, id)) return;  // not ours; check reports it
    packs.emplace_back(name, size);
    total += size;
  });
  std::sort(packs.begin(), packs.end());

  std::vector<std::pair<BlobId, std::vector<PackBlob>>> found;
  Progress p;
  p.phase = "repair";
  p.files_total = packs.size();
  p.bytes_total = total;
  p.totals_known = true;
  auto last = t0;
  for (const auto& [name, size] : packs) {
    if (cancel && cancel->load()) throw Error(Errc::interrupted, "repair interrupted; the old index files are untouched");
    BlobId id;
    parse_id(name, id);
    try {
      found.emplace_back(id, read_pack_header(r.backend(), name, r.aead(), size));
      res.blobs += found.back().second.size();
    } catch (const std::exception& e) {
      res.bad_packs.emplace_back(name, e.what());
    }
    ++p.files_done;
    p.bytes_done += size;
    auto now = std::chrono::steady_clock::now();
    if (progress && now - last >= std::chrono::seconds(1)) {
      last = now;
      p.elapsed_s = std::chrono::duration<double>(now - t0).count();
      p.current = name;
      progress(p);
    }
  }
  res.packs = found.size();

  // A pack whose header is unreadable keeps whatever entries the old index had for
  // it: its blobs may be intact, and dropping them would lose data a repair cannot bring back.
  if (!res.bad_packs.empty()) {
    std::unordered_set<BlobId, BlobIdHash> bad;
    for (const auto& [name, why] : res.bad_packs) {
      BlobId id;
      parse_id(name, id);
      bad.insert(id);
    }
    std::unordered_set<BlobId, BlobIdHash> kept;
    for (const auto& name : old) {
      try {
        IndexFile f = decode_index_file_bytes(r.load_file(FileType::index, name), name);
        for (auto& [pack, blobs] : f.packs)
          if (bad.count(pack) && kept.insert(pack).second) found.emplace_back(pack, std::move(blobs));
      } catch (const std::exception&) {
        // a damaged old index has nothing to contribute
      }
    }
  }

  // Files of at most kBlobsPerFile entries, like the ones backups write; every one
  // names all old files so an interrupted repair is finished by the next load.
  constexpr size_t kBlobsPerFile = 50000;
  std::vector<std::string> written;
  IndexFile f;
  f.supersedes = old;
  size_t in_file = 0;
  auto write = [&] {
    written.push_back(r.write_index_file(f));
    f.packs.clear();
    in_file = 0;
  };
  for (auto& pb : found) {
    in_file += pb.second.size();
    f.packs.push_back(std::move(pb));
    if (in_file >= kBlobsPerFile) write();
  }
  if (!f.packs.empty() || (written.empty() && !old.empty())) write();
  // Only after every new file is safely stored do the old ones go.
  for (const auto& name : old) {
    if (std::find(written.begin(), written.end(), name) != written.end()) continue;
    r.backend().remove({FileType::index, name});
    res.superseded.push_back(name);
  }
  res.index_files = written;
  r.load_index();
  if (progress) {
    p.phase = "done";
    p.current.clear();
    p.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    progress(p);
  }
  return res;
}

}  // namespace cairn::repo
