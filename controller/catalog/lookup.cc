// Lookups for the operator API: id prefixes and the list of restores.
#include "controller/catalog/sqlite.h"
#include "controller/catalog/tx.h"

namespace cairn::catalog {

std::vector<std::string> Tx::ids_with_prefix(IdKind kind, const std::string& prefix, size_t limit) const {
  const char* table = kind == IdKind::backup_set ? "backup_sets" : kind == IdKind::restore ? "restores" : "agents";
  // substr, not LIKE: an id prefix is matched as bytes, '%' and '_' included.
  auto s = db_.prepare(std::string("SELECT id FROM ") + table + " WHERE substr(id, 1, ?) = ? ORDER BY id LIMIT ?");
  s.bind(1, int64_t(prefix.size()));
  s.bind(2, prefix);
  s.bind(3, int64_t(limit));
  std::vector<std::string> out;
  while (s.step()) out.push_back(s.text(0));
  return out;
}

std::vector<Restore> Tx::restores(size_t limit, const std::string& kind) const {
  auto s = db_.prepare("SELECT id FROM restores WHERE kind = ? ORDER BY created_at DESC, rowid DESC LIMIT ?");
  s.bind(1, kind);
  s.bind(2, int64_t(limit));
  std::vector<std::string> ids;
  while (s.step()) ids.push_back(s.text(0));
  std::vector<Restore> out;
  for (const auto& id : ids)
    if (auto r = restore(id)) out.push_back(std::move(*r));
  return out;
}

}  // namespace cairn::catalog
