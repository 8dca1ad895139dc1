#include "agent/drivers/haproxy/cfg_parser.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <regex>
#include <set>

namespace cairn::agent::haproxy {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t'; }

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_name_start(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || (c >= '0' && c <= '9'); }

const std::set<std::string>& section_keywords() {
  static const std::set<std::string> s = {"global",    "defaults", "frontend",    "backend",     "listen", "peers",
                                          "resolvers", "userlist", "mailers",     "http-errors", "ring",   "cache",
                                          "program",   "fcgi-app", "log-forward", "crt-store",   "traces"};
  return s;
}

std::string normalize(const std::string& p) {
  std::string out;
  for (char c : p) {
    if (c == '/' && !out.empty() && out.back() == '/') continue;
    out += c;
  }
  // "./" components are noise; ".." is kept as written (the file is what it names).
  std::string r;
  size_t i = 0;
  while (i < out.size()) {
    if (out.compare(i, 2, "./") == 0 && (i == 0 || out[i - 1] == '/')) {
      i += 2;
      continue;
    }
    r += out[i++];
  }
  if (r.size() > 1 && r.back() == '/') r.pop_back();
  return r;
}

std::string where(const std::string& file, uint32_t n) { return file + ":" + std::to_string(n); }

}  // namespace

std::string_view ref_kind_name(RefKind k) {
  switch (k) {
    case RefKind::crt:
      return "certificate";
    case RefKind::crt_list:
      return "crt-list";
    case RefKind::ca_file:
      return "CA file";
    case RefKind::crl_file:
      return "CRL file";
    case RefKind::map:
      return "map";
    case RefKind::acl_file:
      return "ACL file";
    case RefKind::errorfile:
      return "error file";
    case RefKind::lua:
      return "Lua script";
    case RefKind::dh_param:
      return "DH parameters";
    case RefKind::server_state:
      return "server-state file";
    case RefKind::other:
      return "file";
  }
  return "file";
}

Line tokenize_line(std::string_view raw) {
  Line out;
  size_t i = 0;
  const size_t n = raw.size();
  while (i < n) {
    while (i < n && is_space(raw[i])) ++i;
    if (i >= n || raw[i] == '#') break;
    Word w;
    w.begin = i;
    bool squote = false, dquote = false;
    while (i < n) {
      char c = raw[i];
      if (!squote && !dquote && (is_space(c) || c == '#')) break;
      if (c == '\'' && !dquote) {
        squote = !squote;
        w.plain = false;
        ++i;
        continue;
      }
      if (c == '"' && !squote) {
        dquote = !dquote;
        w.plain = false;
        ++i;
        continue;
      }
      if (c == '\\' && !squote) {
        w.plain = false;
        if (i + 1 >= n) {  // a trailing backslash is kept
          w.text += c;
          ++i;
          continue;
        }
        char e = raw[i + 1];
        switch (e) {
          case ' ':
          case '\\':
          case '#':
          case '\'':
          case '"':
            w.text += e;
            i += 2;
            continue;
          case 'r':
            w.text += '\r';
            i += 2;
            continue;
          case 'n':
            w.text += '\n';
            i += 2;
            continue;
          case 't':
            w.text += '\t';
            i += 2;
            continue;
          case 'x':
            if (i + 3 < n && hexval(raw[i + 2]) >= 0 && hexval(raw[i + 3]) >= 0) {
              w.text += static_cast<char>(hexval(raw[i + 2]) * 16 + hexval(raw[i + 3]));
              i += 4;
              continue;
            }
            out.error = "invalid '\\x' escape";
            w.text += c;
            ++i;
            continue;
          default:
            w.text += c;
            ++i;
            continue;  // unknown escapes are kept as written
        }
      }
      if (c == '$' && dquote) {
        // Left unresolved: the agent's environment is not haproxy's.
        size_t j = i + 1;
        std::string name;
        if (j < n && raw[j] == '{') {
          size_t k = j + 1;
          while (k < n && is_name_char(raw[k])) ++k;
          name = std::string(raw.substr(j + 1, k - j - 1));
          size_t close = raw.find('}', k);
          if (close == std::string_view::npos) {
            out.error = "unterminated '${' of a variable";
            w.text += raw.substr(i);
            i = n;
            break;
          }
          w.text += raw.substr(i, close + 1 - i);
          i = close + 1;
        } else if (j < n && is_name_start(raw[j])) {
          size_t k = j;
          while (k < n && is_name_char(raw[k])) ++k;
          name = std::string(raw.substr(j, k - j));
          w.text += raw.substr(i, k - i);
          i = k;
        } else {
          w.text += c;
          ++i;
          continue;
        }
        w.plain = false;
        if (!name.empty()) w.env.push_back(name);
        continue;
      }
      w.text += c;
      ++i;
    }
    if (squote || dquote) out.error = squote ? "unterminated single quote" : "unterminated double quote";
    w.end = i;
    out.words.push_back(std::move(w));
  }
  return out;
}

std::string quote_word(const std::string& text) {
  bool needs = text.empty();
  for (char c : text)
    if (is_space(c) || c == '#' || c == '\'' || c == '"' || c == '\\' || c == '$' || static_cast<unsigned char>(c) < 0x20) needs = true;
  if (!needs) return text;
  if (text.find('\'') == std::string::npos && text.find('\n') == std::string::npos && text.find('\r') == std::string::npos)
    return "'" + text + "'";
  std::string out;
  for (char c : text) {
    switch (c) {
      case ' ':
      case '\\':
      case '#':
      case '\'':
      case '"':
        out += '\\';
        out += c;
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        out += c;
    }
  }
  return out;
}

ConfigParser::ConfigParser(ParseOptions opt) : opt_(std::move(opt)) {
  if (opt_.working_dir.empty()) opt_.working_dir = "/";
}

std::string ConfigParser::resolve(const std::string& p, const std::string& base) const {
  if (p.empty()) return p;
  if (p[0] == '/') return normalize(p);
  if (!base.empty() && base[0] == '/') return normalize(base + "/" + p);
  if (!base.empty()) return normalize(opt_.working_dir + "/" + base + "/" + p);
  return normalize(opt_.working_dir + "/" + p);
}

bool ConfigParser::read_file(const std::string& path, std::string& out, std::string& why) const {
  std::string real = opt_.read_root + path;
  std::ifstream f(real, std::ios::binary);
  if (!f) {
    why = std::strerror(errno);
    return false;
  }
  out.clear();
  char buf[65536];
  while (f) {
    f.read(buf, sizeof buf);
    out.append(buf, static_cast<size_t>(f.gcount()));
    if (out.size() > opt_.max_file_bytes) {
      why = "larger than " + std::to_string(opt_.max_file_bytes >> 20) + " MiB";
      return false;
    }
  }
  if (f.bad()) {
    why = "read error";
    return false;
  }
  return true;
}

void ConfigParser::add(RefKind kind, const std::string& keyword, const std::string& file, uint32_t n, const Word& w,
                       const std::string& base, size_t sub_begin, size_t sub_len, bool optional) {
  Reference r;
  r.kind = kind;
  r.keyword = keyword;
  r.written = w.text.substr(sub_begin, sub_len);
  r.file = file;
  r.line = n;
  r.optional = optional;
  if (r.written.empty()) return;
  if (!w.env.empty()) {
    std::string names;
    for (const auto& e : w.env) names += (names.empty() ? "" : ", ") + e;
    res_.warnings.push_back(where(file, n) + ": '" + keyword + " " + r.written + "' uses environment variable(s) " + names +
                            ", which the agent does not resolve; the " + std::string(ref_kind_name(kind)) +
                            " it names is not backed up: declare it in 'extra_files'");
    return;
  }
  r.path = resolve(r.written, base);
  if (w.plain) {
    r.rewritable = true;
    r.raw_begin = w.begin + sub_begin;
    r.raw_end = w.begin + sub_begin + r.written.size();
  } else if (sub_begin == 0 && r.written.size() == w.text.size()) {
    // A quoted or escaped word that is the path as a whole: replaced whole.
    r.rewritable = true;
    r.raw_begin = w.begin;
    r.raw_end = w.end;
  }
  if (kind == RefKind::crt_list) pending_crt_lists_.push_back(res_.refs.size());
  res_.refs.push_back(std::move(r));
}

void ConfigParser::bind_options(const std::string& file, uint32_t n, const Line& l, size_t from, bool server) {
  const auto& w = l.words;
  for (size_t i = from; i + 1 < w.size(); ++i) {
    const std::string& k = w[i].text;
    if (k == "crt")
      add(RefKind::crt, k, file, n, w[i + 1], crt_base_), ++i;
    else if (k == "crt-list" && !server)
      add(RefKind::crt_list, k, file, n, w[i + 1], ""), ++i;
    else if (k == "ca-file" || k == "ca-verify-file")
      add(RefKind::ca_file, k, file, n, w[i + 1], ca_base_), ++i;
    else if (k == "crl-file")
      add(RefKind::crl_file, k, file, n, w[i + 1], ca_base_), ++i;
  }
}

void ConfigParser::line(const std::string& file, uint32_t n, const Line& l) {
  if (!l.error.empty()) res_.warnings.push_back(where(file, n) + ": " + l.error + " (haproxy refuses this line)");
  const auto& w = l.words;
  if (w.empty()) return;
  const std::string& kw = w[0].text;
  if (!kw.empty() && kw[0] == '.') return;  // .if/.elif/.else/.endif/.notice...: every branch is read
  if (section_keywords().count(kw)) {
    section_ = kw;
    section_name_ = w.size() > 1 ? w[1].text : "";
    if ((kw == "backend" || kw == "listen") && !section_name_.empty()) res_.backends.push_back(section_name_);
    return;
  }
  if (section_ == "global") {
    if (w.size() < 2) return;
    if (kw == "crt-base")
      crt_base_ = w[1].env.empty() ? resolve(w[1].text, "") : "";
    else if (kw == "ca-base")
      ca_base_ = w[1].env.empty() ? resolve(w[1].text, "") : "";
    else if (kw == "server-state-base")
      state_base_ = w[1].env.empty() ? resolve(w[1].text, "") : "";
    else if (kw == "server-state-file") {
      add(RefKind::server_state, kw, file, n, w[1], state_base_, 0, std::string::npos, true);
      if (!res_.refs.empty() && res_.refs.back().keyword == kw && res_.refs.back().line == n && res_.refs.back().file == file)
        res_.server_state_file = res_.refs.back().path;
    } else if (kw == "lua-load" || kw == "lua-load-per-thread")
      add(RefKind::lua, kw, file, n, w[1], "");
    else if (kw == "ssl-dh-param-file")
      add(RefKind::dh_param, kw, file, n, w[1], "");
    else if (kw == "h1-case-adjust-file" || kw == "51degrees-data-file" || kw == "deviceatlas-json-file" || kw == "wurfl-data-file")
      add(RefKind::other, kw, file, n, w[1], "");
    else if (kw == "stats" && w[1].text == "socket" && w.size() > 2) {
      bind_options(file, n, l, 3, false);
      bool admin = false;
      for (size_t i = 3; i + 1 < w.size(); ++i)
        if (w[i].text == "level" && w[i + 1].text == "admin") admin = true;
      std::string addr = w[2].text;
      if (addr.rfind("unix@", 0) == 0) addr = addr.substr(5);
      if (admin && res_.stats_socket.empty() && !addr.empty() && addr.find('@') == std::string::npos && addr.find(':') == std::string::npos)
        res_.stats_socket = resolve(addr, "");
    }
    return;
  }

  // Proxies and the other sections.
  if (kw == "bind")
    bind_options(file, n, l, 2, false);
  else if (kw == "server" || kw == "default-server")
    bind_options(file, n, l, kw == "server" ? 3 : 1, true);
  else if (kw == "server-template")
    bind_options(file, n, l, 4, true);
  else if (kw == "errorfile" && w.size() > 2)
    add(RefKind::errorfile, kw, file, n, w[2], "");
  else if (kw == "server-state-file-name" && (section_ == "backend" || section_ == "listen" || section_ == "defaults")) {
    std::string name = w.size() > 1 ? w[1].text : "";
    if (w.size() > 1 && name != "use-backend-name") add(RefKind::server_state, kw, file, n, w[1], state_base_, 0, std::string::npos, true);
  } else if (kw == "filter" && w.size() > 1 && w[1].text == "spoe") {
    for (size_t i = 2; i + 1 < w.size(); ++i)
      if (w[i].text == "config") add(RefKind::other, "filter spoe config", file, n, w[i + 1], "");
  }

  // ACL files: 'acl NAME CRITERION [flags] ... -f FILE', and the same flags
  // inside anonymous ACLs '{ ... }' of any condition.
  int braces = 0;
  for (size_t i = 1; i < w.size(); ++i) {
    const std::string& t = w[i].text;
    if (t == "{")
      ++braces;
    else if (t == "}")
      braces = std::max(0, braces - 1);
    else if (t == "-f" && i + 1 < w.size() && (kw == "acl" || braces > 0)) {
      add(RefKind::acl_file, kw == "acl" ? "acl -f" : "-f", file, n, w[i + 1], "");
      ++i;
    }
  }

  // Files of http-request/http-response return and deny.
  if (kw == "http-request" || kw == "http-response" || kw == "http-after-response" || kw == "http-error") {
    for (size_t i = 1; i + 1 < w.size(); ++i) {
      const std::string& t = w[i].text;
      if (t == "file" || t == "lf-file" || t == "errorfile") {
        add(RefKind::errorfile, kw + " " + t, file, n, w[i + 1], "");
        ++i;
      }
    }
  }

  // Maps: converters map(FILE[,default]), map_<match>[_<output>](...), and
  // the actions set-map/del-map/add-acl/del-acl(FILE), in any word.
  static const std::regex conv(R"((^|[,\[])(map(?:_[a-z0-9]+)*)\(([^,)]*))");
  static const std::regex action(R"((^|[^A-Za-z0-9_-])((?:set|del)-map|(?:add|del)-acl)\(([^)]*)\))");
  for (size_t i = 0; i < w.size(); ++i) {
    const std::string& t = w[i].text;
    if (t.find("map") == std::string::npos && t.find("acl(") == std::string::npos) continue;
    for (auto it = std::sregex_iterator(t.begin(), t.end(), conv); it != std::sregex_iterator(); ++it) {
      const auto& m = *it;
      size_t pos = static_cast<size_t>(m.position(3));
      add(RefKind::map, m.str(2), file, n, w[i], "", pos, static_cast<size_t>(m.length(3)));
    }
    for (auto it = std::sregex_iterator(t.begin(), t.end(), action); it != std::sregex_iterator(); ++it) {
      const auto& m = *it;
      size_t pos = static_cast<size_t>(m.position(3));
      RefKind k = m.str(2).find("acl") != std::string::npos ? RefKind::acl_file : RefKind::map;
      add(k, m.str(2), file, n, w[i], "", pos, static_cast<size_t>(m.length(3)));
    }
  }
}

namespace {
// Calls f(line_number, line_without_newline_or_cr) for each line.
template <typename F>
void for_each_line(std::string_view text, F f) {
  uint32_t n = 0;
  size_t i = 0;
  while (i <= text.size()) {
    size_t j = text.find('\n', i);
    if (j == std::string_view::npos) j = text.size();
    std::string_view l = text.substr(i, j - i);
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    ++n;
    if (!(j == text.size() && l.empty())) f(n, l);
    i = j + 1;
  }
}
}  // namespace

void ConfigParser::parse_text(const std::string& file, std::string_view text) {
  section_.clear();
  section_name_.clear();
  for_each_line(text, [&](uint32_t n, std::string_view l) { line(file, n, tokenize_line(l)); });
}

void ConfigParser::parse_path(const std::string& path) {
  std::string p = normalize(path);
  struct stat st {};
  std::string real = opt_.read_root + p;
  if (::stat(real.c_str(), &st) != 0) {
    res_.errors.push_back("cannot read configuration '" + p + "': " + std::strerror(errno));
    return;
  }
  if (S_ISDIR(st.st_mode)) {
    // haproxy reads a directory's *.cfg files (not hidden ones) in lexical order.
    std::vector<std::string> names;
    if (DIR* d = ::opendir(real.c_str())) {
      while (dirent* e = ::readdir(d)) {
        std::string nm = e->d_name;
        if (nm.empty() || nm[0] == '.' || nm.size() < 5 || nm.compare(nm.size() - 4, 4, ".cfg") != 0) continue;
        struct stat fs {};
        if (::stat((real + "/" + nm).c_str(), &fs) == 0 && S_ISREG(fs.st_mode)) names.push_back(nm);
      }
      ::closedir(d);
    } else {
      res_.errors.push_back("cannot list configuration directory '" + p + "': " + std::strerror(errno));
      return;
    }
    std::sort(names.begin(), names.end());
    for (const auto& nm : names) parse_path(p + "/" + nm);
    return;
  }
  std::string text, why;
  if (!read_file(p, text, why)) {
    res_.errors.push_back("cannot read configuration '" + p + "': " + why);
    return;
  }
  res_.files.push_back({p, false});
  parse_text(p, text);
}

void ConfigParser::parse_crt_list_text(const std::string& file, std::string_view text) {
  // "<crtfile> [\[<ssl options>...\]] [[!]<snifilter> ...]" per line; '#' comments.
  for_each_line(text, [&](uint32_t n, std::string_view raw) {
    Line l = tokenize_line(raw);
    if (!l.error.empty()) res_.warnings.push_back(where(file, n) + ": " + l.error);
    if (l.words.empty()) return;
    add(RefKind::crt, "crt-list entry", file, n, l.words[0], crt_base_);
    bool in = false;
    for (size_t i = 1; i < l.words.size(); ++i) {
      Word w = l.words[i];
      std::string t = w.text;
      size_t lead = 0;
      if (!in && !t.empty() && t[0] == '[') in = true, lead = 1;
      if (!in) break;
      bool closes = !t.empty() && t.back() == ']';
      std::string k = t.substr(lead, t.size() - lead - (closes ? 1 : 0));
      if ((k == "ca-file" || k == "ca-verify-file" || k == "crl-file") && i + 1 < l.words.size()) {
        Word v = l.words[i + 1];
        bool vcloses = !v.text.empty() && v.text.back() == ']';
        size_t len = v.text.size() - (vcloses ? 1 : 0);
        add(k == "crl-file" ? RefKind::crl_file : RefKind::ca_file, "crt-list " + k, file, n, v, ca_base_, 0, len);
        ++i;
        if (vcloses) in = false;
        continue;
      }
      if (closes) in = false;
    }
  });
}

void ConfigParser::read_crt_lists() {
  while (!pending_crt_lists_.empty()) {
    size_t idx = pending_crt_lists_.front();
    pending_crt_lists_.erase(pending_crt_lists_.begin());
    std::string p = res_.refs[idx].path;
    if (crt_lists_read_.count(p)) continue;
    crt_lists_read_[p] = true;
    std::string text, why;
    if (!read_file(p, text, why)) continue;  // a missing crt-list is reported as a missing reference
    res_.files.push_back({p, true});
    parse_crt_list_text(p, text);
  }
}

ParseResult parse_config(const std::vector<std::string>& config, const ParseOptions& opt) {
  ConfigParser p(opt);
  for (const auto& c : config) p.parse_path(c);
  p.read_crt_lists();
  return std::move(p.result());
}

std::string apply_edits(std::string_view text, std::vector<Edit> edits) {
  std::sort(edits.begin(), edits.end(), [](const Edit& a, const Edit& b) {
    return a.line != b.line ? a.line < b.line : a.begin > b.begin;  // right to left within a line
  });
  std::string out;
  out.reserve(text.size() + 256);
  uint32_t n = 0;
  size_t i = 0, e = 0;
  while (i < text.size()) {
    size_t j = text.find('\n', i);
    bool nl = j != std::string_view::npos;
    if (!nl) j = text.size();
    std::string l(text.substr(i, j - i));
    bool cr = !l.empty() && l.back() == '\r';
    if (cr) l.pop_back();
    ++n;
    while (e < edits.size() && edits[e].line < n) ++e;
    size_t last = std::string::npos;
    for (; e < edits.size() && edits[e].line == n; ++e) {
      const Edit& ed = edits[e];
      if (ed.end > l.size() || ed.begin > ed.end || ed.end > last) continue;  // out of range or overlapping: left
      l.replace(ed.begin, ed.end - ed.begin, ed.text);
      last = ed.begin;
    }
    out += l;
    if (cr) out += '\r';
    if (nl) out += '\n';
    i = j + 1;
  }
  return out;
}

}  // namespace cairn::agent::haproxy
