#include "common/audit/topic.h"

#include <nlohmann/json.hpp>

namespace cairn::audit {
namespace {

using nlohmann::json;

bool get_string(const json& j, const char* k, std::string& out) {
  auto it = j.find(k);
  if (it == j.end() || !it->is_string()) return false;
  out = it->get<std::string>();
  return true;
}

bool get_int(const json& j, const char* k, int64_t& out) {
  auto it = j.find(k);
  if (it == j.end() || !it->is_number_integer()) return false;
  out = it->get<int64_t>();
  return true;
}

}  // namespace

Bytes checkpoint_signing_bytes(int64_t seq, const std::string& hash, int64_t time) {
  constexpr std::string_view tag = "cairn-audit-checkpoint-v1";
  Bytes b(tag.begin(), tag.end());
  put_length_prefixed(b, std::to_string(seq));
  put_length_prefixed(b, hash);
  put_length_prefixed(b, std::to_string(time));
  return b;
}

std::string encode_event(const AuditEvent& e) {
  json j = {{"kind", "event"},      {"v", 1},
            {"seq", e.seq},         {"event_id", e.event_id},
            {"time", e.time},       {"actor", e.actor},
            {"action", e.action},   {"target", e.target},
            {"outcome", e.outcome}, {"reason", e.reason},
            {"details", e.details}, {"prev_hash", e.prev_hash},
            {"hash", e.hash}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string encode_checkpoint(const Checkpoint& c) {
  json j = {{"kind", "checkpoint"},
            {"v", 1},
            {"seq", c.seq},
            {"hash", c.hash},
            {"time", c.time},
            {"key_id", c.key_id},
            {"public_key", c.public_key},
            {"signature", c.signature},
            {"announcements", c.announcements}};
  return j.dump();
}

std::optional<Record> decode_record(std::string_view value, std::string& why) {
  json j = json::parse(value, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    why = "not a JSON object";
    return std::nullopt;
  }
  std::string kind;
  int64_t v = 0;
  if (!get_string(j, "kind", kind) || !get_int(j, "v", v)) {
    why = "no 'kind' and 'v'";
    return std::nullopt;
  }
  if (v != 1) {
    why = "record version " + std::to_string(v) + " is not 1 (a newer controller? upgrade cairn-audit)";
    return std::nullopt;
  }
  Record r;
  if (kind == "event") {
    r.kind = Record::Kind::event;
    AuditEvent& e = r.event;
    if (!get_int(j, "seq", e.seq) || !get_string(j, "event_id", e.event_id) || !get_int(j, "time", e.time) ||
        !get_string(j, "actor", e.actor) || !get_string(j, "action", e.action) || !get_string(j, "target", e.target) ||
        !get_string(j, "outcome", e.outcome) || !get_string(j, "reason", e.reason) || !get_string(j, "details", e.details) ||
        !get_string(j, "prev_hash", e.prev_hash) || !get_string(j, "hash", e.hash)) {
      why = "an event record lacks a field or has one of the wrong type";
      return std::nullopt;
    }
    if (e.seq < 1) {
      why = "an event record's seq is below 1";
      return std::nullopt;
    }
    return r;
  }
  if (kind == "checkpoint") {
    r.kind = Record::Kind::checkpoint;
    Checkpoint& c = r.checkpoint;
    auto a = j.find("announcements");
    if (!get_int(j, "seq", c.seq) || !get_string(j, "hash", c.hash) || !get_int(j, "time", c.time) || !get_string(j, "key_id", c.key_id) ||
        !get_string(j, "public_key", c.public_key) || !get_string(j, "signature", c.signature) || a == j.end() || !a->is_array()) {
      why = "a checkpoint record lacks a field or has one of the wrong type";
      return std::nullopt;
    }
    for (const auto& x : *a) {
      if (!x.is_string()) {
        why = "a checkpoint's announcements are not strings";
        return std::nullopt;
      }
      c.announcements.push_back(x.get<std::string>());
    }
    return r;
  }
  why = "unknown record kind '" + kind + "'";
  return std::nullopt;
}

}  // namespace cairn::audit
