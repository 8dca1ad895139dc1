// The HAProxy driver's configuration reader on crafted configurations: the
// tokenizer reads words as haproxy 2.6 does, and every referenced file is
// found with its base directory applied.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "agent/drivers/haproxy/cfg_parser.h"
#include "agent/drivers/haproxy/runtime.h"

using namespace cairn::agent::haproxy;
namespace fs = std::filesystem;

namespace {

struct Dir {
  fs::path p;
  Dir() {
    std::string t = (fs::temp_directory_path() / "haproxy-parser-XXXXXX").string();
    p = ::mkdtemp(t.data());
  }
  ~Dir() { fs::remove_all(p); }
  std::string write(const std::string& rel, const std::string& text) const {
    fs::path f = p / rel;
    fs::create_directories(f.parent_path());
    std::ofstream(f, std::ios::binary) << text;
    return f.string();
  }
  std::string str() const { return p.string(); }
};

std::vector<std::string> texts(const Line& l) {
  std::vector<std::string> out;
  for (const auto& w : l.words) out.push_back(w.text);
  return out;
}

// path -> keyword for every resolved reference
std::multiset<std::pair<std::string, std::string>> refs_of(const ParseResult& r) {
  std::multiset<std::pair<std::string, std::string>> out;
  for (const auto& x : r.refs) out.insert({x.path, x.keyword});
  return out;
}

bool has(const ParseResult& r, const std::string& path, RefKind k) {
  return std::any_of(r.refs.begin(), r.refs.end(), [&](const Reference& x) { return x.path == path && x.kind == k; });
}

}  // namespace

TEST_CASE("haproxy words: comments, quotes, escapes, variables") {
  CHECK(texts(tokenize_line("  bind :443   ssl crt /a.pem # a comment")) ==
        std::vector<std::string>{"bind", ":443", "ssl", "crt", "/a.pem"});
  CHECK(texts(tokenize_line("# only a comment")).empty());
  CHECK(texts(tokenize_line("x a#b")) == std::vector<std::string>{"x", "a"});
  CHECK(texts(tokenize_line(R"(errorfile 503 '/etc/my errors/503.http')")) ==
        std::vector<std::string>{"errorfile", "503", "/etc/my errors/503.http"});
  CHECK(texts(tokenize_line(R"(a "b c"d 'e"f' g\ h i\#j k\\l)")) == std::vector<std::string>{"a", "b cd", "e\"f", "g h", "i#j", "k\\l"});
  CHECK(texts(tokenize_line(R"(x \x41\t 'no\ escape')")) == std::vector<std::string>{"x", "A\t", "no\\ escape"});

  Line v = tokenize_line(R"(crt "${CERT_DIR}/site.pem" '$NOT_A_VAR' $ALSO_NOT)");
  REQUIRE(v.words.size() == 4);
  CHECK(v.words[1].text == "${CERT_DIR}/site.pem");
  CHECK(v.words[1].env == std::vector<std::string>{"CERT_DIR"});
  CHECK(v.words[2].env.empty());
  CHECK(v.words[3].env.empty());  // outside double quotes '$' is literal
  CHECK(v.words[3].plain);

  CHECK(tokenize_line("a 'unterminated").error == "unterminated single quote");

  Line p = tokenize_line("  crt /x.pem");
  REQUIRE(p.words.size() == 2);
  CHECK(p.words[1].begin == 6);
  CHECK(p.words[1].end == 12);
  CHECK(p.words[1].plain);
}

TEST_CASE("haproxy reader: quote_word round-trips through the tokenizer") {
  for (std::string s : {"plain", "with space", "it's", "a#b", "$HOME", "back\\slash", "q\"uote", ""}) {
    Line l = tokenize_line("k " + quote_word(s));
    REQUIRE(l.words.size() == 2);
    CHECK(l.words[1].text == s);
    CHECK(l.words[1].env.empty());
  }
}

TEST_CASE("haproxy reader: every referenced file is found, bases applied") {
  Dir d;
  const std::string D = d.str();
  d.write("certs/list.txt",
          "# comment\n"
          "site.pem [ssl-min-ver TLSv1.2 ca-file clients.pem crl-file /abs/revoked.crl] www.example.com\n"
          "\n"
          "/other/abs.pem !*.internal\n");
  std::string cfg =
      d.write("haproxy.cfg",
              "global\n"
              "    crt-base " +
                  D +
                  "/certs\n"
                  "    ca-base " +
                  D +
                  "/ca\n"
                  "    server-state-base /var/lib/haproxy\n"
                  "    server-state-file global.state\n"
                  "    lua-load /etc/haproxy/auth.lua\n"
                  "    ssl-dh-param-file /etc/haproxy/dh.pem\n"
                  "    stats socket /run/haproxy/admin.sock mode 660 level admin\n"
                  "defaults\n"
                  "    errorfile 503 /etc/haproxy/errors/503.http\n"
                  "frontend fe\n"
                  "    bind :443 ssl crt front.pem crt-list " +
                  D +
                  "/certs/list.txt ca-file client-ca.pem crl-file crl.pem verify optional\n"
                  "    acl bad src -f /etc/haproxy/blocked.lst\n"
                  "    acl hostmap hdr(host) -M -f /etc/haproxy/hosts.map\n"
                  "    http-request deny if { src -f /etc/haproxy/deny.lst }\n"
                  "    http-request set-var(txn.be) req.hdr(host),lower,map_dom(/etc/haproxy/dom.map,default)\n"
                  "    use_backend %[req.hdr(host),map(/etc/haproxy/be.map)]\n"
                  "    http-request set-map(/etc/haproxy/dyn.map) %[src] %[req.hdr(x)]\n"
                  "    http-request return status 200 content-type text/plain file /etc/haproxy/hello.txt if { path /hello }\n"
                  "    errorfiles myerrors\n"
                  "backend be\n"
                  "    server s1 10.0.0.1:443 ssl crt client.pem ca-file server-ca.pem\n"
                  "    server-state-file-name be.state\n"
                  "http-errors myerrors\n"
                  "    errorfile 404 \"/etc/haproxy/my errors/404.http\"\n");
  ParseResult r = parse_config({cfg});
  INFO([&] {
    std::string s;
    for (const auto& x : r.refs) s += x.keyword + " " + x.path + "\n";
    for (const auto& w : r.warnings) s += "warning " + w + "\n";
    return s;
  }());
  CHECK(r.errors.empty());
  CHECK(has(r, D + "/certs/front.pem", RefKind::crt));
  CHECK(has(r, D + "/certs/list.txt", RefKind::crt_list));
  CHECK(has(r, D + "/ca/client-ca.pem", RefKind::ca_file));
  CHECK(has(r, D + "/ca/crl.pem", RefKind::crl_file));
  CHECK(has(r, D + "/certs/site.pem", RefKind::crt));      // inside the crt-list, crt-base applied
  CHECK(has(r, D + "/ca/clients.pem", RefKind::ca_file));  // inside the crt-list's [options]
  CHECK(has(r, "/abs/revoked.crl", RefKind::crl_file));
  CHECK(has(r, "/other/abs.pem", RefKind::crt));
  CHECK(has(r, "/etc/haproxy/blocked.lst", RefKind::acl_file));
  CHECK(has(r, "/etc/haproxy/hosts.map", RefKind::acl_file));
  CHECK(has(r, "/etc/haproxy/deny.lst", RefKind::acl_file));
  CHECK(has(r, "/etc/haproxy/dom.map", RefKind::map));
  CHECK(has(r, "/etc/haproxy/be.map", RefKind::map));
  CHECK(has(r, "/etc/haproxy/dyn.map", RefKind::map));
  CHECK(has(r, "/etc/haproxy/hello.txt", RefKind::errorfile));
  CHECK(has(r, "/etc/haproxy/errors/503.http", RefKind::errorfile));
  CHECK(has(r, "/etc/haproxy/my errors/404.http", RefKind::errorfile));
  CHECK(has(r, "/etc/haproxy/auth.lua", RefKind::lua));
  CHECK(has(r, "/etc/haproxy/dh.pem", RefKind::dh_param));
  CHECK(has(r, D + "/certs/client.pem", RefKind::crt));
  CHECK(has(r, D + "/ca/server-ca.pem", RefKind::ca_file));
  CHECK(has(r, "/var/lib/haproxy/be.state", RefKind::server_state));
  CHECK(r.server_state_file == "/var/lib/haproxy/global.state");
  CHECK(r.stats_socket == "/run/haproxy/admin.sock");
  CHECK(r.backends == std::vector<std::string>{"be"});
  CHECK(r.warnings.empty());
  // The crt-list was read as a file of its own.
  REQUIRE(r.files.size() == 2);
  CHECK(r.files[1].path == D + "/certs/list.txt");
  CHECK(r.files[1].crt_list);
}

TEST_CASE("haproxy reader: references in the less common places") {
  Dir d;
  std::string cfg = d.write("h.cfg",
                            "global\n"
                            "    ca-base /ca\n"
                            "    stats socket ipv4@127.0.0.1:9999 level admin ssl crt /certs/stats.pem\n"
                            "    stats socket unix@/run/second.sock level admin\n"
                            "    lua-load-per-thread /lua/t.lua\n"
                            ".if defined(SOMETHING)\n"
                            "    lua-load /lua/only-if.lua\n"
                            ".endif\n"
                            "peers mypeers\n"
                            "    bind 127.0.0.1:10000 ssl crt /certs/peer.pem ca-verify-file verify.pem\n"
                            "backend b\n"
                            "    default-server ssl ca-file backends.pem crl-file backends.crl\n"
                            "    server-template web 1-3 10.0.0.1:443 crt /certs/client.pem\n"
                            "    filter spoe engine e config /etc/haproxy/spoe.conf\n"
                            "    http-request deny deny_status 403 errorfile /e/403.http if { src -f \"/lists/quoted list.lst\" }\n"
                            "    server-state-file-name use-backend-name\n");
  ParseResult r = parse_config({cfg});
  CHECK(r.errors.empty());
  CHECK(r.warnings.empty());
  CHECK(has(r, "/certs/stats.pem", RefKind::crt));
  CHECK(r.stats_socket == "/run/second.sock");  // the first one is TCP
  CHECK(has(r, "/lua/t.lua", RefKind::lua));
  CHECK(has(r, "/lua/only-if.lua", RefKind::lua));  // every branch of .if is read
  CHECK(has(r, "/certs/peer.pem", RefKind::crt));
  CHECK(has(r, "/ca/verify.pem", RefKind::ca_file));
  CHECK(has(r, "/ca/backends.pem", RefKind::ca_file));
  CHECK(has(r, "/ca/backends.crl", RefKind::crl_file));
  CHECK(has(r, "/certs/client.pem", RefKind::crt));
  CHECK(has(r, "/etc/haproxy/spoe.conf", RefKind::other));
  CHECK(has(r, "/e/403.http", RefKind::errorfile));
  CHECK(has(r, "/lists/quoted list.lst", RefKind::acl_file));
  for (const auto& x : r.refs)
    if (x.path == "/lists/quoted list.lst") {
      // A quoted word that is the whole path is replaced whole, quotes included.
      REQUIRE(x.rewritable);
      Line l =
          tokenize_line(apply_edits("    http-request deny deny_status 403 errorfile /e/403.http if { src -f \"/lists/quoted list.lst\" }",
                                    {{1, x.raw_begin, x.raw_end, quote_word("/stage/it's.lst")}}));
      CHECK(l.words.at(l.words.size() - 2).text == "/stage/it's.lst");
    }
  CHECK(std::none_of(r.refs.begin(), r.refs.end(), [](const Reference& x) { return x.kind == RefKind::server_state; }));
}

TEST_CASE("haproxy reader: a directory is read as haproxy reads it: its *.cfg files in lexical order") {
  Dir d;
  d.write("conf.d/20-backends.cfg", "backend b2\n  errorfile 500 /e/b2.http\n");
  d.write("conf.d/10-front.cfg", "frontend f\n  bind :80\n");
  d.write("conf.d/README", "not read\n  errorfile 500 /never\n");
  d.write("conf.d/.hidden.cfg", "backend hidden\n");
  std::string main = d.write("main.cfg", "global\n  log stdout local0\n");
  ParseResult r = parse_config({main, d.str() + "/conf.d/"});
  REQUIRE(r.files.size() == 3);
  CHECK(r.files[0].path == main);
  CHECK(r.files[1].path == d.str() + "/conf.d/10-front.cfg");
  CHECK(r.files[2].path == d.str() + "/conf.d/20-backends.cfg");
  CHECK(r.backends == std::vector<std::string>{"b2"});
  CHECK(refs_of(r).count({"/e/b2.http", "errorfile"}) == 1);
  CHECK(refs_of(r).count({"/never", "errorfile"}) == 0);
}

TEST_CASE("haproxy reader: environment variables are left unresolved with a warning naming the line") {
  Dir d;
  std::string cfg = d.write("h.cfg", "frontend f\n  bind :443 ssl crt \"${CERTS}/a.pem\"\n  acl x src -f \"$LISTS/x.lst\"\n");
  ParseResult r = parse_config({cfg});
  CHECK(r.refs.empty());
  REQUIRE(r.warnings.size() == 2);
  CHECK(r.warnings[0].find(cfg + ":2") == 0);
  CHECK(r.warnings[0].find("CERTS") != std::string::npos);
  CHECK(r.warnings[0].find("extra_files") != std::string::npos);
  CHECK(r.warnings[1].find("LISTS") != std::string::npos);
}

TEST_CASE("haproxy reader: a missing configuration file is an error naming it") {
  ParseResult r = parse_config({"/nonexistent/haproxy.cfg"});
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].find("'/nonexistent/haproxy.cfg'") != std::string::npos);
}

TEST_CASE("haproxy reader: relative paths without a base are taken from haproxy's working directory") {
  Dir d;
  std::string cfg = d.write("h.cfg", "frontend f\n  http-request set-var(txn.x) src,map_ip(maps/ip.map)\n  errorfile 503 ./e.http\n");
  ParseOptions o;
  o.working_dir = "/srv/hap";
  ParseResult r = parse_config({cfg}, o);
  CHECK(has(r, "/srv/hap/maps/ip.map", RefKind::map));
  CHECK(has(r, "/srv/hap/e.http", RefKind::errorfile));
}

TEST_CASE("haproxy reader: read_root reads a staged copy and reports the real paths") {
  Dir d;
  d.write("etc/haproxy/list.txt", "a.pem\n");
  d.write("etc/haproxy/h.cfg", "global\n  crt-base /etc/ssl\nfrontend f\n  bind :443 ssl crt-list /etc/haproxy/list.txt\n");
  ParseOptions o;
  o.read_root = d.str();
  ParseResult r = parse_config({"/etc/haproxy/h.cfg"}, o);
  CHECK(r.errors.empty());
  REQUIRE(r.files.size() == 2);
  CHECK(r.files[0].path == "/etc/haproxy/h.cfg");
  CHECK(has(r, "/etc/ssl/a.pem", RefKind::crt));
}

TEST_CASE("haproxy reader: apply_edits points references elsewhere and leaves the rest of the text alone") {
  std::string text = "frontend f\r\n  bind :443 ssl crt a.pem crt-list /l.txt # keep\n  use_backend %[src,map_ip(/m.map)]\nlast";
  Dir d;
  std::string cfg = d.write("h.cfg", text);
  ParseResult r = parse_config({cfg});
  std::vector<Edit> edits;
  for (const auto& x : r.refs) {
    if (x.file != cfg) continue;
    REQUIRE(x.rewritable);
    edits.push_back({x.line, x.raw_begin, x.raw_end, quote_word("/stage dir" + x.path)});
  }
  REQUIRE(edits.size() == 3);
  std::string out = apply_edits(text, edits);
  CHECK(out ==
        "frontend f\r\n  bind :443 ssl crt '/stage dir/a.pem' crt-list '/stage dir/l.txt' # keep\n"
        "  use_backend %[src,map_ip('/stage dir/m.map')]\nlast");
  // What haproxy would read from the edited line:
  Line l = tokenize_line("  bind :443 ssl crt '/stage dir/a.pem'");
  CHECK(l.words.back().text == "/stage dir/a.pem");
}

TEST_CASE("haproxy reader: show servers state is read by its header") {
  std::string text =
      "1\n"
      "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
      "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state "
      "bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr "
      "srv_agent_port\n"
      "3 be1 1 s1 127.0.0.1 0 1 10 10 1 1 0 0 0 0 0 0 - 18091 - 0 0 - - 0\n"
      "3 be1 2 s2 127.0.0.1 2 8 5 20 2 1 0 2 0 0 0 0 - 18092 - 0 0 - - 0\n"
      "3 be1 3 s3 127.0.0.1 2 0 7 20 2 1 0 2 0 0 0 0 - 18093 - 0 0 - - 0\n";
  auto s = parse_servers_state(text);
  REQUIRE(s.size() == 3);
  CHECK(s[0].backend == "be1");
  CHECK(s[0].server == "s1");
  CHECK(s[0].forced() == "maint");
  CHECK(s[0].weight == 10);
  CHECK(s[1].forced() == "drain");
  CHECK(s[1].weight == 5);
  CHECK(s[2].forced() == "ready");
  CHECK(server_commands(s[0]) == std::vector<std::string>{"set server be1/s1 weight 10", "set server be1/s1 state maint"});
  CHECK_THROWS(parse_servers_state("2\n# be_id\n"));
  CHECK_THROWS(parse_servers_state("1\n# be_id be_name srv_id srv_name srv_op_state srv_admin_state srv_uweight\n3 be1\n"));
}

TEST_CASE("haproxy reader: stick tables, maps and info as the CLI prints them") {
  auto tables = parse_table_list("# table: st2, type: string, size:10, used:1\n# table: be1, type: ip, size:1024, used:1\n\n");
  REQUIRE(tables.size() == 2);
  CHECK(tables[0].name == "st2");
  CHECK(tables[1].type == "ip");

  auto e = parse_table_dump(
      "# table: be1, type: ip, size:1024, used:1\n"
      "0x7f03f00465c8: key=10.0.0.1 use=0 exp=599299 server_id=1 server_key=s1 gpc0=3 conn_cnt=0 http_req_rate(10000)=4\n");
  REQUIRE(e.size() == 1);
  CHECK(e[0].key == "10.0.0.1");
  CHECK(table_commands("be1", e[0]) ==
        std::vector<std::string>{"set table be1 key 10.0.0.1 data.server_id 1", "set table be1 key 10.0.0.1 data.gpc0 3",
                                 "set table be1 key 10.0.0.1 data.conn_cnt 0", "set table be1 key 10.0.0.1 data.http_req_rate 4"});
  auto s = parse_table_dump("0x565514249fb8: key=hello\\ world use=0 exp=0 gpc0=7\n");
  REQUIRE(s.size() == 1);
  CHECK(s[0].key == "hello\\ world");

  CHECK(parse_map_list("# id (file) description\n0 (/tmp/hx/hosts.map) pattern loaded from file '/tmp/hx/hosts.map' used by map at "
                       "file 'h.cfg' line 11. curr_ver=0 next_ver=0 entry_cnt=4\n") == std::vector<std::string>{"/tmp/hx/hosts.map"});
  auto m = parse_map_dump("0x5655140531d0 a.example zzz\n0x7f03f00467b0 b.example two words\n");
  REQUIRE(m.size() == 2);
  CHECK(m[1] == std::pair<std::string, std::string>{"b.example", "two words"});
  CHECK(map_commands("/m.map", {{"a", "1"}, {"b", "2 x"}}, {{"a", "9"}, {"c", "3"}}) ==
        std::vector<std::string>{"set map /m.map a 1", "add map /m.map b 2\\ x", "del map /m.map c"});

  auto info = parse_info("Name: HAProxy\nVersion: 2.6.12-1+deb12u4\nPid: 4719\n");
  CHECK(info["Version"] == "2.6.12-1+deb12u4");
  CHECK(info["Pid"] == "4719");
  CHECK(cli_ok("\n"));
  CHECK_FALSE(cli_ok("No such server.\n"));
}

TEST_CASE("haproxy reader: runtime state survives its JSON form") {
  RuntimeState r;
  r.servers_state = "1\n# be_id\n";
  r.tables.push_back({{"t", "ip"}, {{"10.0.0.1", {{"gpc0", "3"}}}}});
  r.maps.push_back({"/m.map", {{"k", "v w"}}});
  RuntimeState b = runtime_from_json(runtime_to_json(r));
  CHECK(b.servers_state == r.servers_state);
  REQUIRE(b.tables.size() == 1);
  CHECK(b.tables[0].second[0].data[0].second == "3");
  CHECK(b.maps[0].second[0].second == "v w");
  CHECK_THROWS(runtime_from_json(nlohmann::json::object()));
}
