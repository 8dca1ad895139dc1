#include "common/plan/recovery_target.h"

#include <cctype>
#include <cstdio>
#include <ctime>

namespace cairn::plan {

namespace v1 = cairn::v1;

namespace {

bool digits(const std::string& s, size_t pos, size_t n, int* out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

}  // namespace

bool parse_time_us(const std::string& s, int64_t* us) {
  int Y, M, D, h, m, sec;
  if (!digits(s, 0, 4, &Y) || s.size() < 19 || s[4] != '-' || !digits(s, 5, 2, &M) || s[7] != '-' || !digits(s, 8, 2, &D) ||
      (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !digits(s, 11, 2, &h) || s[13] != ':' || !digits(s, 14, 2, &m) || s[16] != ':' ||
      !digits(s, 17, 2, &sec))
    return false;
  if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60) return false;
  size_t i = 19;
  int64_t frac = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    int n = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
      if (n < 6) frac = frac * 10 + (s[i] - '0');
      ++n;
      ++i;
    }
    if (n == 0) return false;
    for (; n < 6; ++n) frac *= 10;
  }
  int offset_s = 0;
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
    ++i;
  } else if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    int oh = 0, om = 0;
    int sign = s[i] == '-' ? -1 : 1;
    if (!digits(s, i + 1, 2, &oh)) return false;
    i += 3;
    if (i < s.size() && s[i] == ':') ++i;
    if (i < s.size()) {
      if (!digits(s, i, 2, &om)) return false;
      i += 2;
    }
    if (oh > 23 || om > 59) return false;
    offset_s = sign * (oh * 3600 + om * 60);
  } else {
    return false;  // no zone
  }
  if (i != s.size()) return false;
  std::tm tm{};
  tm.tm_year = Y - 1900;
  tm.tm_mon = M - 1;
  tm.tm_mday = D;
  tm.tm_hour = h;
  tm.tm_min = m;
  tm.tm_sec = sec;
  time_t t = timegm(&tm);
  std::tm back{};
  gmtime_r(&t, &back);
  if (back.tm_mday != D || back.tm_mon != M - 1) return false;  // 2026-02-31
  *us = (int64_t(t) - offset_s) * 1000000 + frac;
  return true;
}

std::string format_time_us(int64_t us) {
  int64_t s = us >= 0 ? us / 1000000 : (us - 999999) / 1000000;
  int64_t f = us - s * 1000000;
  time_t t = time_t(s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02d %02d:%02d:%02d.%06lld+00", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                tm.tm_min, tm.tm_sec, static_cast<long long>(f));
  return buf;
}

bool parse_lsn(const std::string& s, uint64_t* lsn) {
  auto slash = s.find('/');
  if (slash == std::string::npos || slash == 0 || slash > 8 || s.size() - slash - 1 == 0 || s.size() - slash - 1 > 8) return false;
  uint64_t hi = 0, lo = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == slash) continue;
    char c = s[i];
    int v = std::isdigit(static_cast<unsigned char>(c)) ? c - '0'
            : (c >= 'a' && c <= 'f')                    ? c - 'a' + 10
            : (c >= 'A' && c <= 'F')                    ? c - 'A' + 10
                                                        : -1;
    if (v < 0) return false;
    (i < slash ? hi : lo) = ((i < slash ? hi : lo) << 4) | uint64_t(v);
  }
  *lsn = (hi << 32) | lo;
  return true;
}

std::string format_lsn(uint64_t lsn) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%X/%X", unsigned(lsn >> 32), unsigned(lsn & 0xffffffffu));
  return buf;
}

std::string ParsedTarget::describe() const {
  std::string edge = exclusive ? " (exclusive)" : "";
  switch (kind) {
    case v1::RecoveryTarget::KIND_LATEST:
      return "the latest archived WAL";
    case v1::RecoveryTarget::KIND_IMMEDIATE:
      return "the end of the base backup";
    case v1::RecoveryTarget::KIND_TIME:
      return "time " + format_time_us(time_us) + edge;
    case v1::RecoveryTarget::KIND_LSN:
      return "LSN " + format_lsn(lsn) + edge;
    case v1::RecoveryTarget::KIND_XID:
      return "transaction " + std::to_string(xid) + edge;
    default:
      return "none";
  }
}

std::string parse_recovery_target(const v1::RecoveryTarget& t, ParsedTarget* out) {
  ParsedTarget p;
  p.kind = t.kind();
  p.exclusive = t.exclusive();
  switch (t.kind()) {
    case v1::RecoveryTarget::KIND_UNSPECIFIED:
    case v1::RecoveryTarget::KIND_LATEST:
    case v1::RecoveryTarget::KIND_IMMEDIATE:
      if (!t.value().empty()) return "a recovery target '" + t.value() + "' was given without a kind";
      if (t.exclusive() && t.kind() != v1::RecoveryTarget::KIND_UNSPECIFIED)
        return "'exclusive' applies to a time, LSN or transaction target only";
      break;
    case v1::RecoveryTarget::KIND_TIME:
      if (!parse_time_us(t.value(), &p.time_us))
        return "recovery target time '" + t.value() +
               "' is not an RFC 3339 time with a zone (e.g. 2026-11-27T10:00:00Z or 2026-11-27 11:00:00.5+01:00)";
      break;
    case v1::RecoveryTarget::KIND_LSN:
      if (!parse_lsn(t.value(), &p.lsn)) return "recovery target LSN '" + t.value() + "' is not of the form 16/B374D848";
      break;
    case v1::RecoveryTarget::KIND_XID: {
      if (t.value().empty() || t.value().size() > 19) return "recovery target transaction '" + t.value() + "' is not a transaction id";
      for (char c : t.value())
        if (!std::isdigit(static_cast<unsigned char>(c))) return "recovery target transaction '" + t.value() + "' is not a transaction id";
      p.xid = std::stoull(t.value());
      if (p.xid < 3) return "recovery target transaction '" + t.value() + "' is not a normal transaction id (3 or more)";
      break;
    }
    default:
      return "unknown recovery target kind " + std::to_string(int(t.kind()));
  }
  const std::string& tl = t.timeline();
  if (tl == "current") {
    p.timeline_current = true;
  } else if (!tl.empty() && tl != "latest") {
    bool number = tl.size() <= 10;
    for (char c : tl) number = number && std::isdigit(static_cast<unsigned char>(c));
    if (!number || std::stoull(tl) == 0 || std::stoull(tl) > 0xFFFFFFFFull)
      return "target timeline '" + tl + "' is not 'latest', 'current' or a timeline's number (1 or more)";
    p.timeline = uint32_t(std::stoull(tl));
  }
  if (out) *out = p;
  return {};
}

}  // namespace cairn::plan
