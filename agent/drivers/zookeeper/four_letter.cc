#include "agent/drivers/zookeeper/four_letter.h"

#include "agent/drivers/zookeeper/layout.h"
#include "common/util/error.h"

namespace cairn::agent::zookeeper {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

template <typename F>
void each_line(std::string_view text, F f) {
  while (!text.empty()) {
    size_t nl = text.find('\n');
    f(trim(text.substr(0, nl)));
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
}

std::optional<uint64_t> parse_count(std::string_view s) {
  s = trim(s);
  if (s.empty() || s.size() > 20) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + uint64_t(c - '0');
  }
  return v;
}

}  // namespace

bool is_not_whitelisted(std::string_view reply) { return reply.find("not in the whitelist") != std::string_view::npos; }

ServerStatus parse_srvr(std::string_view reply) {
  ServerStatus s;
  bool seen = false;
  each_line(reply, [&](std::string_view line) {
    size_t c = line.find(':');
    if (c == std::string_view::npos) return;
    std::string_view key = trim(line.substr(0, c)), value = trim(line.substr(c + 1));
    if (key == "Zookeeper version") {
      s.version = std::string(value);
      seen = true;
    } else if (key == "Mode") {
      s.mode = std::string(value);
    } else if (key == "Zxid") {
      if (auto z = parse_zxid(value)) s.zxid = *z, s.has_zxid = true;
    } else if (key == "Node count") {
      if (auto n = parse_count(value)) s.node_count = *n, s.has_node_count = true;
    }
  });
  if (!seen) throw Error(Errc::invalid_input, "the reply to 'srvr' is not ZooKeeper's (no 'Zookeeper version' line)");
  return s;
}

std::map<std::string, std::string> parse_mntr_fields(std::string_view reply) {
  std::map<std::string, std::string> out;
  each_line(reply, [&](std::string_view line) {
    size_t t = line.find('\t');
    if (t == std::string_view::npos) return;
    out[std::string(trim(line.substr(0, t)))] = std::string(trim(line.substr(t + 1)));
  });
  return out;
}

ServerStatus parse_mntr(std::string_view reply) {
  auto f = parse_mntr_fields(reply);
  ServerStatus s;
  auto it = f.find("zk_version");
  if (it == f.end()) throw Error(Errc::invalid_input, "the reply to 'mntr' is not ZooKeeper's (no 'zk_version')");
  s.version = it->second;
  if (auto m = f.find("zk_server_state"); m != f.end()) s.mode = m->second;
  if (auto n = f.find("zk_znode_count"); n != f.end())
    if (auto v = parse_count(n->second)) s.node_count = *v, s.has_node_count = true;
  if (auto e = f.find("zk_ephemerals_count"); e != f.end()) s.ephemerals = parse_count(e->second);
  return s;
}

}  // namespace cairn::agent::zookeeper
