#pragma once
// Audit events as the catalog writes them. The event, its hash chain and the
// chain check live in common/audit/chain.h (cairn-audit verifies the same chain).
#include <nlohmann/json.hpp>
#include <string>

#include "common/audit/chain.h"

namespace cairn::catalog {

using audit::audit_hash;
using audit::AuditEvent;
using audit::ChainReport;
using audit::kGenesisHash;
using audit::verify_chain;

// What a caller states about an event; the catalog adds id, seq, time and hashes.
struct AuditRecord {
  std::string action;   // "agent.approve", "task.failed", ...
  std::string target;   // "agent:ag-...", "task:tk-...", ...
  std::string outcome;  // "ok", "refused", or the new state
  std::string reason;   // error code name or short text; empty when none
  nlohmann::json details = nlohmann::json::object();
};

}  // namespace cairn::catalog
