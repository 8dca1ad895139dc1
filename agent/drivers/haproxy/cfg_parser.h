#pragma once
// Reads an HAProxy configuration the way haproxy 2.6 tokenizes it (comments,
// single and double quotes, backslash escapes, environment variables inside
// double quotes) and collects every file it references: certificates and
// crt-lists (and the files inside them), CA and CRL files, maps and ACL
// files, error files, Lua scripts, the DH parameter file, the server-state
// file. Environment variables are never resolved: a reference that uses one
// is reported as a warning, since the file it names cannot be known here.
// Conditional blocks (.if/.else) are not evaluated: every branch is read.
//
// No haproxy process and no agent state are involved: the unit tests feed it
// crafted configurations.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::agent::haproxy {

// One word of a line, unquoted and unescaped.
struct Word {
  std::string text;
  size_t begin = 0, end = 0;     // byte range of the word in the raw line (quotes included)
  bool plain = true;             // no quotes, escapes or variables: text == raw line[begin, end)
  std::vector<std::string> env;  // environment variables used (left unresolved in text)
};

struct Line {
  std::vector<Word> words;
  std::string error;  // e.g. "unterminated double quote"; words are then what was read before it
};

// Tokenizes one line (without its newline) as haproxy's parse_line does.
Line tokenize_line(std::string_view raw);

// A word that haproxy reads as the given text, whatever it holds: quoted
// when needed (single quotes, or backslashes where the text has a quote).
std::string quote_word(const std::string& text);

enum class RefKind { crt, crt_list, ca_file, crl_file, map, acl_file, errorfile, lua, dh_param, server_state, other };
std::string_view ref_kind_name(RefKind k);

struct Reference {
  RefKind kind = RefKind::other;
  std::string keyword;  // "crt", "map_dom", "acl -f", "errorfile", ...
  std::string written;  // the path as written (unquoted)
  std::string path;     // resolved absolute path (bases applied); empty when it uses environment variables
  std::string file;     // the file that references it (real path) and the line (1-based)
  uint32_t line = 0;
  // Where the path stands in the raw line, when it can be replaced there (a
  // plain word, or a quoted one that is the whole path): a check of a
  // restored configuration points it at the staged copy.
  bool rewritable = false;
  size_t raw_begin = 0, raw_end = 0;
  bool optional = false;  // may legitimately not exist yet (a server-state file haproxy has not written)
};

struct ParseOptions {
  // Prefixed to every path this parser opens (the staging directory of a
  // restore); paths it reports are never prefixed.
  std::string read_root;
  // Relative paths without a base (maps, error files, Lua) are taken from
  // haproxy's working directory.
  std::string working_dir = "/";
  size_t max_file_bytes = 16 << 20;
};

struct ParsedFile {
  std::string path;  // real path
  bool crt_list = false;
};

struct ParseResult {
  // The configuration files in the order haproxy reads them (directories
  // expanded to their *.cfg files in lexical order), then the crt-lists read.
  std::vector<ParsedFile> files;
  std::vector<Reference> refs;
  std::vector<std::string> warnings;  // "FILE:LINE: ..." for what could not be followed
  std::vector<std::string> errors;    // a config file or crt-list that could not be read
  std::string server_state_file;      // global server-state-file, resolved; empty when none
  std::string stats_socket;           // first 'stats socket' path declared with 'level admin' (unix), else empty
  std::vector<std::string> backends;  // backend and listen section names, in order
};

// Reads the configuration as `haproxy -f c1 -f c2 ...` would.
ParseResult parse_config(const std::vector<std::string>& config, const ParseOptions& opt = {});

// Parses one configuration file's text (unit tests; parse_config calls it
// per file with the state it carries between files).
class ConfigParser {
 public:
  explicit ConfigParser(ParseOptions opt);
  void parse_text(const std::string& file, std::string_view text);
  // Reads a config file (or a directory's *.cfg files) from disk.
  void parse_path(const std::string& path);
  ParseResult& result() { return res_; }
  // The crt-lists referenced so far and not read yet are read (their
  // certificates join refs).
  void read_crt_lists();

 private:
  void line(const std::string& file, uint32_t n, const Line& l);
  void parse_crt_list_text(const std::string& file, std::string_view text);
  void add(RefKind kind, const std::string& keyword, const std::string& file, uint32_t n, const Word& w, const std::string& base,
           size_t sub_begin = 0, size_t sub_len = std::string::npos, bool optional = false);
  std::string resolve(const std::string& p, const std::string& base) const;
  bool read_file(const std::string& path, std::string& out, std::string& why) const;
  void bind_options(const std::string& file, uint32_t n, const Line& l, size_t from, bool server);

  ParseOptions opt_;
  ParseResult res_;
  std::string section_;
  std::string section_name_;
  std::string crt_base_, ca_base_, state_base_;
  std::vector<size_t> pending_crt_lists_;  // indexes into res_.refs
  std::map<std::string, bool> crt_lists_read_;
};

// Edits to one file's text: on line `line` (1-based), bytes [begin, end) become `text`.
struct Edit {
  uint32_t line = 0;
  size_t begin = 0, end = 0;
  std::string text;
};
// Applies edits line by line (lines split on '\n', as the parser read them).
std::string apply_edits(std::string_view text, std::vector<Edit> edits);

}  // namespace cairn::agent::haproxy
