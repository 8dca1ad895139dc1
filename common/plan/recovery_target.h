#pragma once
// A point-in-time recovery target (RecoveryTarget in proto/cairn.proto):
// checked the same way by cairnctl, the controller and the agent, and turned
// into the one form each needs (docs/postgresql.md § Point-in-time recovery).
#include <cstdint>
#include <string>

#include "proto/cairn.pb.h"

namespace cairn::plan {

// The drivers whose restores the controller orders to a recovery target.
// Point-in-time recovery is the controller's over PostgreSQL's WAL archive
// (its base backups, timelines and archived segments in the catalog); the
// agent asks its driver (DriverCaps::replays_to_target).
inline bool replays_to_target(const std::string& driver) { return driver == "postgresql"; }

struct ParsedTarget {
  cairn::v1::RecoveryTarget::Kind kind = cairn::v1::RecoveryTarget::KIND_UNSPECIFIED;
  int64_t time_us = 0;  // KIND_TIME: microseconds since the epoch, UTC
  uint64_t lsn = 0;     // KIND_LSN
  uint64_t xid = 0;     // KIND_XID
  bool exclusive = false;
  // The timeline to follow: latest (0 with timeline_current false), current
  // (the base backup's), or timeline N.
  bool timeline_current = false;
  uint32_t timeline = 0;
  std::string describe() const;  // "time 2026-11-27 10:00:00.000000+00", "LSN 0/3000028", "latest"
};

// Empty when t is well formed (*out filled), else why not, naming the value.
std::string parse_recovery_target(const cairn::v1::RecoveryTarget& t, ParsedTarget* out);

// "2026-11-27T10:00:00Z", "2026-11-27 10:00:00.25+01:00" -> microseconds since
// the epoch; false when not RFC 3339 with a zone (a time without one would be
// read in some server's local zone).
bool parse_time_us(const std::string& s, int64_t* us);
// Microseconds since the epoch -> "2026-11-27 10:00:00.250000+00" (PostgreSQL's
// timestamptz input, unambiguous in every DateStyle).
std::string format_time_us(int64_t us);
// "16/B374D848" <-> 0x16B374D848
bool parse_lsn(const std::string& s, uint64_t* lsn);
std::string format_lsn(uint64_t lsn);

}  // namespace cairn::plan
