#include "common/repo/storage/text.h"

#include <sys/stat.h>

#include <cctype>
#include <cstdlib>
#include <sstream>

#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::repo::storage {

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string trim_blanks(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  return s.substr(i);
}

std::string file_stamp(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + "/" + std::to_string(st.st_size) + "/" +
         std::to_string(st.st_ino);
}

std::map<std::string, std::string> read_credentials_file(const std::string& path, const std::string& keys_hint) {
  std::string text = read_secret_file(path);  // refuses group/other-readable files
  std::map<std::string, std::string> kv;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    line = trim_blanks(line);
    if (line.empty() || line[0] == '#') continue;
    auto eq = line.find('=');
    if (eq == std::string::npos)
      throw Error(Errc::invalid_input,
                  "credentials file '" + path + "' line " + std::to_string(n) + " is not KEY=VALUE (keys: " + keys_hint + ")");
    std::string k = trim_blanks(line.substr(0, eq));
    for (auto& c : k) c = char(std::tolower(static_cast<unsigned char>(c)));
    kv[k] = trim_blanks(line.substr(eq + 1));
  }
  return kv;
}

void each_listed(const std::string& x, const std::string& entry_tag, const std::string& key_tag, const std::string& size_tag,
                 const std::string& prefix, const std::function<void(const std::string&, uint64_t)>& fn) {
  each_listed_info(x, entry_tag, key_tag, size_tag, "", prefix, [&](const std::string& n, uint64_t s, const std::string&) { fn(n, s); });
}

std::string bare_etag(std::string e) {
  if (e.rfind("W/", 0) == 0) e.erase(0, 2);
  if (e.size() >= 2 && e.front() == '"' && e.back() == '"') e = e.substr(1, e.size() - 2);
  return e;
}

void each_listed_info(const std::string& x, const std::string& entry_tag, const std::string& key_tag, const std::string& size_tag,
                      const std::string& etag_tag, const std::string& prefix,
                      const std::function<void(const std::string&, uint64_t, const std::string&)>& fn) {
  size_t pos = 0;
  for (;;) {
    size_t a = x.find("<" + entry_tag + ">", pos);
    if (a == std::string::npos) break;
    size_t end = x.find("</" + entry_tag + ">", a);
    if (end == std::string::npos) break;
    size_t p = a;
    std::string k = xml_value(x, key_tag, &p, end);
    p = a;
    std::string sz = xml_value(x, size_tag, &p, end);
    std::string etag;
    if (!etag_tag.empty()) {
      p = a;
      etag = bare_etag(xml_value(x, etag_tag, &p, end));
    }
    pos = end;
    if (k.size() <= prefix.size()) continue;
    std::string name = k.substr(k.rfind('/') + 1);
    if (name.empty() || name[0] == '.') continue;
    fn(name, sz.empty() ? 0 : std::stoull(sz), etag);
  }
}

std::string xml_value(const std::string& x, const std::string& tag, size_t* pos, size_t end) {
  size_t from = pos ? *pos : 0;
  size_t a = x.find("<" + tag + ">", from);
  if (a == std::string::npos || a >= end) return {};
  a += tag.size() + 2;
  size_t b = x.find("</" + tag + ">", a);
  if (b == std::string::npos) return {};
  if (pos) *pos = b;
  std::string raw = x.substr(a, b - a), out;
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '&') {
      out += raw[i];
      continue;
    }
    size_t semi = raw.find(';', i);
    std::string ent = semi == std::string::npos ? "" : raw.substr(i + 1, semi - i - 1);
    if (ent == "amp")
      out += '&';
    else if (ent == "lt")
      out += '<';
    else if (ent == "gt")
      out += '>';
    else if (ent == "quot")
      out += '"';
    else if (ent == "apos")
      out += '\'';
    else if (ent.size() > 1 && ent[0] == '#')
      out += char(std::strtol(ent.c_str() + (ent[1] == 'x' ? 2 : 1), nullptr, ent[1] == 'x' ? 16 : 10));
    else {
      out += '&';
      continue;
    }
    i = semi;
  }
  return out;
}

}  // namespace cairn::repo::storage
