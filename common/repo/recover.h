#pragma once
// Putting back what a writer damaged or deleted, from the versions a versioning
// store keeps (S3 bucket versioning or Object Lock): `cairnctl repo check`
// names, for each damaged or missing object, the newest earlier version that is
// whole, and `check --recover` makes that version the current one again
// (docs/operations.md § Recovering overwritten objects).
//
// Whole means: its bytes hash to the object's name (every object but config is
// content-addressed: index files, snapshots, key slots, set records by SHA-256,
// packs by pack_id), or, for config, that the open authenticated it.
#include <optional>
#include <string>
#include <vector>

#include "common/repo/checker.h"

namespace cairn::repo {

struct Recovery {
  Handle handle;
  std::string object;  // "snapshots/ab12…", "data/ab/ab12…", "config"
  std::string version, modified;
};

// For each problem of `report` about one store object (a damaged or missing
// index file, snapshot, pack, key slot or config), the newest earlier version
// that is whole; sets the problem's recoverable_version and says so in its
// message. Empty on a store that keeps no versions.
std::vector<Recovery> find_recoveries(Repository& r, CheckReport& report);

// The same for one object named from elsewhere (a snapshot a signed set record
// names and the store no longer lists).
std::optional<Recovery> find_recovery(Repository& r, const Handle& h);

// Makes the version the object's current one again (a write that needs the
// right to overwrite: the controller's credentials).
void apply_recovery(Repository& r, const Recovery& rc);

// The handle of an object path ("index/…", "data/ab/…", "config"), or nullopt.
std::optional<Handle> handle_of_object(const std::string& object);

}  // namespace cairn::repo
