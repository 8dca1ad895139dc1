#pragma once
// Puts restored files in place one by one, keeping every replaced file as
// `<file>.cairn-old-<stamp>`, and undoes it all when a later step fails (a
// reload that does not take). A file already equal to the restored one (same
// bytes, mode and owner) is left alone. Each new file is written to a
// temporary name in its own directory, fsynced, and renamed over the old one,
// which stays reachable under its kept-aside name (a hard link made first).
#include <functional>
#include <string>
#include <vector>

namespace cairn::agent::haproxy {

class FileSwap {
 public:
  explicit FileSwap(std::string stamp) : stamp_(std::move(stamp)) {}
  const std::string& stamp() const { return stamp_; }
  // Told each change before it is made: dst, and where its previous contents
  // will be kept ("" when there are none). The restore's record
  // (agent/restore_journal.h) is written there; when it throws, nothing of
  // that change is made.
  void before_change(std::function<void(const std::string& dst, const std::string& old)> fn) { before_ = std::move(fn); }
  // Puts the staged regular file or symbolic link `src` at `dst`. True when
  // dst changed. Throws cairn::Error naming dst when it cannot.
  bool install(const std::string& src, const std::string& dst);
  // Writes `data` at dst likewise (mode and owner of the old file, or 0644).
  bool install_bytes(const std::string& data, const std::string& dst);
  // Renames dst to its kept-aside name.
  void set_aside(const std::string& dst);
  // Undoes every change, newest first; returns what could not be undone.
  std::vector<std::string> rollback();

  const std::vector<std::string>& changed() const { return changed_; }  // destinations changed
  const std::vector<std::string>& kept() const { return kept_; }        // the kept-aside names

 private:
  struct Step {
    std::string dst, old;  // old: where the previous dst is kept ("" when there was none)
    bool removed = false;  // set_aside: dst no longer exists
  };
  std::string aside_name(const std::string& dst) const;
  void commit_new(const std::string& tmp, const std::string& dst);

  std::string stamp_;
  std::function<void(const std::string&, const std::string&)> before_;
  std::vector<Step> steps_;
  std::vector<std::string> changed_, kept_;
};

}  // namespace cairn::agent::haproxy
