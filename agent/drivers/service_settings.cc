#include "agent/drivers/service_settings.h"

namespace cairn::agent {

namespace {

std::vector<std::string> read_argv(TableReader& t, const std::string& key) {
  auto v = t.string_list(key);
  if (!v) return {};
  if (v->empty() || (*v)[0].empty()) t.fail(key, "must name a program (an array: program, then its arguments)");
  if ((*v)[0][0] != '/') t.fail(key, "'" + (*v)[0] + "' must be an absolute path (the agent's PATH is not the operator's)");
  return *v;
}

}  // namespace

platform::ServiceDecl read_service(TableReader& r, const std::string& key, std::chrono::seconds default_kill_after) {
  platform::ServiceDecl d;
  const toml::node* n = r.take(key);
  if (!n) return d;
  if (n->is_string()) {
    d.unit = n->as_string()->get();
    if (d.unit.empty()) r.fail(key, "must name a systemd unit, e.g. \"prometheus.service\"");
    d.kill_after = default_kill_after;
    return d;
  }
  if (!n->is_table()) r.fail(key, "must be a systemd unit name or a table { unit = ..., start_command = [...], stop_command = [...] }");
  TableReader t(*n->as_table(), r.file(), "'" + key + "' of " + r.where());
  d.unit = t.string_or("unit", "");
  d.start_command = read_argv(t, "start_command");
  d.stop_command = read_argv(t, "stop_command");
  d.reload_command = read_argv(t, "reload_command");
  d.kill_command = read_argv(t, "kill_command");
  if (auto s = t.integer("timeout_seconds", 1, 3600)) d.timeout = std::chrono::seconds(*s);
  if (auto s = t.integer("kill_after_seconds", 0, 3600))
    d.kill_after = std::chrono::seconds(*s);
  else if (!d.unit.empty() || !d.kill_command.empty())
    d.kill_after = default_kill_after;
  t.finish();
  if (d.unit.empty() && (d.start_command.empty() || d.stop_command.empty()))
    r.fail(key, "needs 'unit', or both 'start_command' and 'stop_command'");
  if (d.kill_after.count() > 0 && d.unit.empty() && d.kill_command.empty())
    r.fail(key,
           "sets 'kill_after_seconds' but declares no way to kill the service: add 'kill_command' (an array: "
           "program, then its arguments), or set kill_after_seconds = 0");
  return d;
}

}  // namespace cairn::agent
