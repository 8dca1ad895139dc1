#pragma once
// What the controller's HTTP listener serves (docs/operations.md § Metrics
// and status page): /metrics in the Prometheus text format, and a read-only
// HTML status page. Both are rendered on the controller's loop thread from
// the catalog (a Catalog is single-threaded) every couple of seconds and
// handed to the HTTP thread as finished text.
#include <cstdint>
#include <functional>
#include <string>

#include "controller/audit_publisher.h"
#include "controller/catalog/catalog.h"
#include "controller/fleet.h"
#include "controller/maintenance.h"
#include "controller/verification.h"

namespace cairn::controller {

struct StatusSources {
  catalog::Catalog& catalog;
  const Fleet& fleet;
  const Maintenance& maintenance;
  const AuditPublisher* publisher = nullptr;  // may be null
  std::vector<std::string> repositories;      // the controller's declared ones
  const Verifier* verifier = nullptr;         // may be null: nothing verified shown
};

// The Prometheus text exposition (version 0.0.4).
std::string render_metrics(const StatusSources& s);
// A self-contained HTML page: no script, no external resource.
std::string render_status_page(const StatusSources& s, const std::string& controller_id);

// "&lt;" and friends, for text inside HTML.
std::string html_escape(std::string_view s);

}  // namespace cairn::controller
