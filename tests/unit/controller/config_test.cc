// The controller's configuration: defaults, and every refusal names file:line.
#include "controller/config.h"

#include <catch2/catch.hpp>

#include "controller/server.h"

using cairn::controller::ConfigError;
using cairn::controller::parse_config;

namespace {

std::string error_of(const std::string& text) {
  try {
    parse_config(text, "ctl.toml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("an empty file gives the documented defaults") {
  auto c = parse_config("", "ctl.toml");
  CHECK(c.fleet_listen == "tcp://0.0.0.0:7420");
  CHECK(c.operator_listen == "tcp://127.0.0.1:7421");
  CHECK_FALSE(c.enrolment_open);
  CHECK(c.heartbeat_interval_ms == 2000);
  CHECK(c.liveness == 5);
  CHECK(c.plan_validity_seconds == 3600);
  CHECK(c.backlog == 4096);
  CHECK(c.io_threads == 0);
  CHECK(c.data_dir == "/var/lib/cairn");
  CHECK(c.catalog_path() == "/var/lib/cairn/catalog.db");
  CHECK_FALSE(c.controller_id.empty());
}

TEST_CASE("every key is read") {
  auto c = parse_config(R"(
[controller]
id = "ctl-a"
data_dir = "/tmp/d"
key_dir = "/tmp/k"
log_level = "debug"

[fleet]
listen = "tcp://127.0.0.1:9000"
enrolment = "open"
heartbeat_interval_ms = 500
liveness = 3
backlog = 2048
io_threads = 3

[operator]
listen = "ipc:///tmp/op.sock"
authorized_keys = { alice = "/tmp/k/operator-curve.pub" }

[plans]
validity_seconds = 600
lock_ttl_seconds = 7200
)",
                        "ctl.toml");
  CHECK(c.controller_id == "ctl-a");
  CHECK(c.data_dir == "/tmp/d");
  CHECK(c.key_dir == "/tmp/k");
  CHECK(c.log_level == "debug");
  CHECK(c.fleet_listen == "tcp://127.0.0.1:9000");
  CHECK(c.enrolment_open);
  CHECK(c.heartbeat_interval_ms == 500);
  CHECK(c.liveness == 3);
  CHECK(c.backlog == 2048);
  CHECK(c.io_threads == 3);
  CHECK(c.operator_listen == "ipc:///tmp/op.sock");
  REQUIRE(c.operator_key_files.size() == 1);
  CHECK(c.operator_key_files.at("alice") == "/tmp/k/operator-curve.pub");
  CHECK(c.plan_validity_seconds == 600);
  CHECK(c.lock_ttl_seconds == 7200);
}

TEST_CASE("an unknown key is refused with its line") {
  CHECK(error_of("[fleet]\nlisten = \"tcp://127.0.0.1:1\"\nliveliness = 3\n") == "ctl.toml:3:1: unknown key 'fleet.liveliness'");
  CHECK(error_of("\n[fleets]\n").rfind("ctl.toml:2:", 0) == 0);
  CHECK(error_of("\n[fleets]\n").find("unknown key 'fleets'") != std::string::npos);
}

TEST_CASE("a value of the wrong type or out of range is refused with its line and reason") {
  CHECK(error_of("[fleet]\nliveness = \"five\"\n") == "ctl.toml:2:12: 'fleet.liveness' must be an integer");
  CHECK(error_of("[fleet]\n\nliveness = 1\n") == "ctl.toml:3:12: 'fleet.liveness' is 1, must be between 2 and 100");
  CHECK(error_of("[plans]\nvalidity_seconds = 999999999\n").rfind("ctl.toml:2:", 0) == 0);
  CHECK(error_of("[fleet]\nenrolment = \"maybe\"\n") == "ctl.toml:2:13: 'fleet.enrolment' is 'maybe', must be 'closed' or 'open'");
  CHECK(error_of("[fleet]\nlisten = \"0.0.0.0:7420\"\n").find("'fleet.listen' must be a 'tcp://host:port'") != std::string::npos);
  CHECK(error_of("[controller]\nlog_level = \"loud\"\n").rfind("ctl.toml:2:", 0) == 0);
  CHECK(error_of("[operator]\nauthorized_keys = { bob = 3 }\n").rfind("ctl.toml:2:", 0) == 0);
  CHECK(error_of("fleet = 3\n") == "ctl.toml:1:9: 'fleet' must be a table ([fleet])");
}

TEST_CASE("the I/O threads follow the usable CPUs unless fleet.io_threads names them") {
  using cairn::controller::io_threads_for;
  auto d = parse_config("", "ctl.toml");
  CHECK(io_threads_for(d, 1) == 1);
  CHECK(io_threads_for(d, 2) == 2);
  CHECK(io_threads_for(d, 6) == 6);
  CHECK(io_threads_for(d, 64) == 8);  // a big host: CURVE work spread, the loop and signing keep their CPUs
  auto c = parse_config("[fleet]\nio_threads = 3\n", "ctl.toml");
  CHECK(io_threads_for(c, 1) == 3);
  CHECK(io_threads_for(c, 64) == 3);
  CHECK(error_of("[fleet]\nio_threads = 65\n") == "ctl.toml:2:14: 'fleet.io_threads' is 65, must be between 0 and 64");
  CHECK(error_of("[fleet]\nio_threads = -1\n") == "ctl.toml:2:14: 'fleet.io_threads' is -1, must be between 0 and 64");
}

TEST_CASE("a TOML syntax error is refused with its line") {
  auto e = error_of("[fleet]\nlisten = \n");
  CHECK(e.rfind("ctl.toml:2:", 0) == 0);
}

TEST_CASE("a missing file is named") {
  try {
    cairn::controller::load_config("/nonexistent/ctl.toml");
    FAIL("no error");
  } catch (const ConfigError& e) {
    CHECK(std::string(e.what()) == "/nonexistent/ctl.toml: cannot read the configuration file");
  }
}

TEST_CASE("the catalog growth bounds have documented defaults and ranges") {
  auto d = parse_config("", "ctl.toml");
  CHECK(d.max_pending_agents == 100);
  CHECK(d.audit_retention_events == 1000000);
  CHECK(d.audit_retention_days == 90);
  CHECK(d.audit_refusals_per_minute == 60);
  auto c = parse_config(R"(
[fleet]
max_pending_agents = 20
[audit]
retention_events = 5000
retention_days = 7
refusals_per_minute = 10
)",
                        "ctl.toml");
  CHECK(c.max_pending_agents == 20);
  CHECK(c.audit_retention_events == 5000);
  CHECK(c.audit_retention_days == 7);
  CHECK(c.audit_refusals_per_minute == 10);
  CHECK(error_of("[fleet]\nmax_pending_agents = 0\n") == "ctl.toml:2:22: 'fleet.max_pending_agents' is 0, must be between 1 and 100000");
  CHECK_THAT(error_of("[audit]\nretention_events = 10\n"), Catch::Contains("'audit.retention_events' is 10"));
  CHECK_THAT(error_of("[audit]\nkeep = 1\n"), Catch::Contains("unknown key 'audit.keep'"));
}

TEST_CASE("a control character is refused with its place before the TOML parser sees it") {
  // "[\x01'c" made toml++ assert (fuzz_controller_config): a crash, not a message.
  CHECK(error_of(std::string("[\x01'c", 4)) ==
        "ctl.toml:1:2: control character 0x01 is not allowed (only tab, line feed and carriage return)");
  CHECK(error_of(std::string("[fleet]\nlisten = \"a\0b\"\n", 23)).rfind("ctl.toml:2:12: control character 0x00", 0) == 0);
  CHECK(error_of("[fleet]\r\n\tliveness = 3\r\n").empty());  // tab, CR and LF are fine
}

TEST_CASE("a malformed table header is refused with its place before the TOML parser sees it") {
  // "[;…" and "[/0.…" (fuzz_controller_config) made toml++ 3.3.0 fail an
  // assertion in parse_key(): an abort, or undefined behaviour under NDEBUG.
  const std::string expected =
      "(expected [name] or [[name]]: names bare (A-Za-z0-9_-) or quoted, joined by dots, "
      "then only a # comment)";
  CHECK(error_of("[;AAAA\n") == "ctl.toml:1:1: malformed table header '[;AAAA' " + expected);
  CHECK(error_of("[fleet]\nliveness = 5\n\n  [operator_ttl_seconds = 86400\n") ==
        "ctl.toml:4:3: malformed table header '[operator_ttl_seconds = 86400' " + expected);
  CHECK(error_of("[controller]\n[/0.&.0.0:7420\"\n").rfind("ctl.toml:2:1: malformed table header '[/0.&.0.0:7420\"'", 0) == 0);
  for (const char* bad : {"[", "[\n", "[ ]", "[#x]", "[[[x]]]", "[ [x]]", "[x]]", "[[x]", "[x] y", "[x.]", "[.x]", "[\"x]", "['x]",
                          "[x\"y\"]", "[{x}]", "[\xc3\xa9]", "[x]\r"})
    CHECK(error_of(std::string("a = 1\n") + bad).rfind("ctl.toml:2:1: malformed table header '", 0) == 0);
  CHECK(error_of("\xef\xbb\xbf[;]").rfind("ctl.toml:1:1: malformed table header '[;]'", 0) == 0);  // after a BOM
}

TEST_CASE("an array holding '}' or a non-ASCII character outside strings is refused before the TOML parser sees it") {
  // toml++ 3.3.0 asserts in parse_value() on '}' in an array, and reaches
  // TOML_UNREACHABLE in is_non_ascii_horizontal_whitespace() for U+00A1..U+0499
  // wherever it looks for blanks.
  CHECK(error_of("[fleet]\nx = [1,\n  }]\n") == "ctl.toml:3:3: '}' inside an array, where a value or ']' is expected");
  CHECK(error_of("x = {a = [}]}\n") == "ctl.toml:1:11: '}' inside an array, where a value or ']' is expected");
  CHECK(error_of("x = [\xe2\x80\xa8]\n") == "ctl.toml:1:6: non-ASCII character U+2028 outside a string or comment");
  CHECK(error_of("x = [\xc2\x85]\n") == "ctl.toml:1:6: non-ASCII character U+0085 outside a string or comment");
  CHECK(error_of("[controlr]\n\xcf\x96"
                 "deet]\n") == "ctl.toml:2:1: non-ASCII character U+03D6 outside a string or comment");
  // A value token runs to a blank, ] } , or #: quotes inside it open no string.
  CHECK(error_of("dir = 1II\"/etc/cairn\xd1\x94s\"\n") == "ctl.toml:1:21: non-ASCII character U+0454 outside a string or comment");
  CHECK(error_of("x = \"a\"\xc3\xa9\n") == "ctl.toml:1:8: non-ASCII character U+00E9 outside a string or comment");
  CHECK(error_of("x = \"\"\"a \\\n  \xc3\xa9\"\"\"\n") ==
        "ctl.toml:2:3: non-ASCII character U+00E9 first after a line-ending backslash (at line 1) in a multi-line "
        "string (toml++ 3.3.0 mishandles it: escape it as \\uXXXX)");
  CHECK(error_of("x = \"a\\\xc3\xa9\"\n") == "ctl.toml:1:8: non-ASCII character U+00E9 after a backslash in a string");
  // parse_value() asserts on a date, a space and a lone digit.
  CHECK(error_of("x = 1979-05-27 0\n") == "ctl.toml:1:5: '1979-05-27 0' is neither a value nor a date and time");
  CHECK(error_of("x = [1979-05-27 7]\n") == "ctl.toml:1:6: '1979-05-27 7' is neither a value nor a date and time");
  CHECK(error_of("[controller]\nid = 1979-05-27 07:32:00\n").find("must be a string") != std::string::npos);
  // Inside strings, quoted keys and comments they are fine.
  CHECK(error_of("[controller] # caf\xc3\xa9\nid = \"caf\xc3\xa9\"\n").find("non-ASCII") == std::string::npos);
  CHECK(error_of("[\"caf\xc3\xa9\"]\n").find("unknown key") != std::string::npos);
  CHECK(error_of("[controller]\nid = \"\"\"a \\\n  b\xc3\xa9\"\"\"\n").find("non-ASCII") == std::string::npos);
}

TEST_CASE("well-formed headers with quoted and dotted keys, blanks and comments still parse") {
  auto c = parse_config(
      "\xef\xbb\xbf# comment\n"
      "[ \"fleet\" ]   # the fleet\r\n"
      "liveness = 3\n"
      "\t[ 'operator' . authorized_keys ]#c\n"
      "alice = \"/k/a.pub\"\n"
      "[\"plans\"]\n"
      "validity_seconds = 600 # [;not a header\n",
      "ctl.toml");
  CHECK(c.liveness == 3);
  REQUIRE(c.operator_key_files.size() == 1);
  CHECK(c.operator_key_files.at("alice") == "/k/a.pub");
  CHECK(c.plan_validity_seconds == 600);
  // Lines starting with '[' inside strings and multi-line arrays are not headers.
  CHECK(error_of("[controller]\nid = \"\"\"\n[;x\n\"\"\"\n").find("malformed") == std::string::npos);
  CHECK(error_of("[controller]\nid = '''\n[\n'''\n").find("malformed") == std::string::npos);
  CHECK(error_of("[controller]\nid = [\n  [1, \"]\"],\n[ ],\n  # ]\n[{a = 1}],\n]\n").find("malformed") == std::string::npos);
}

TEST_CASE("policies, repositories and the HTTP listener are read and checked") {
  auto c = parse_config(R"(
[scheduler]
time_zone = "Europe/Berlin"
[http]
listen = "127.0.0.1:0"
[[repository]]
name = "main"
path = "/srv/backup"
password_file = "/etc/cairn/repo.pass"
[[policy]]
name = "nightly"
schedule = "0 1 * * *"
labels = { role = "db" }
components = ["etcd"]
keep_daily = 7
keep_within = "2w"
keep_min = 7
)",
                        "ctl.toml");
  CHECK(c.time_zone == "Europe/Berlin");
  CHECK(c.http_listen == "127.0.0.1:0");
  REQUIRE(c.repositories.size() == 1);
  CHECK(c.repository("main")->path == "/srv/backup");
  REQUIRE(c.policies.size() == 1);
  const auto& p = c.policies[0];
  CHECK(p.source == "config");
  CHECK(p.time_zone == "Europe/Berlin");  // the [scheduler] default
  CHECK(p.selector["labels"]["role"] == "db");
  CHECK(p.selector["components"][0] == "etcd");
  CHECK(p.retention.daily == 7);
  CHECK(p.retention.within == 14 * 86400);
  CHECK(p.retention.min == 7);

  CHECK_THAT(error_of("[[policy]]\nname = \"p\"\nschedule = \"0 25 * * *\"\n"),
             Catch::Contains("ctl.toml:1:1: policy 'p': hour field '25'"));
  CHECK_THAT(error_of("[[policy]]\nname = \"p\"\nschedule = \"@daily\"\ntime_zone = \"Nowhere/City\"\n"),
             Catch::Contains("unknown time zone 'Nowhere/City'"));
  CHECK_THAT(error_of("[[policy]]\nname = \"p\"\nschedule = \"@daily\"\nkeep_within = \"soon\"\n"),
             Catch::Contains("keep_within 'soon' is not a duration"));
  CHECK_THAT(error_of("[[policy]]\nname = \"p\"\nschedule = \"@daily\"\n[[policy]]\nname = \"p\"\nschedule = \"@daily\"\n"),
             Catch::Contains("declared twice"));
  CHECK_THAT(error_of("[[repository]]\nname = \"m\"\npath = \"rel\"\npassword_file = \"/p\"\n"), Catch::Contains("must be absolute"));
  // An offsite copy goes to a repository the controller declares, not the policy's own.
  CHECK_THAT(error_of("[[policy]]\nname = \"p\"\nschedule = \"@daily\"\ncopy_to = \"offsite\"\n"),
             Catch::Contains("copy_to 'offsite' is not a [[repository]] declared in this file"));
  CHECK_THAT(error_of("[[policy]]\nname = \"p\"\nschedule = \"@daily\"\nrepository = \"m\"\ncopy_to = \"m\"\n"),
             Catch::Contains("is the policy's own repository"));
  {
    auto c = parse_config(
        "[[repository]]\nname = \"offsite\"\npath = \"/srv/offsite\"\npassword_file = \"/p\"\n"
        "[[policy]]\nname = \"p\"\nschedule = \"@daily\"\ncopy_to = \"offsite\"\n",
        "ctl.toml");
    REQUIRE(c.policies.size() == 1);
    CHECK(c.policies[0].copy_to == "offsite");
  }
  CHECK_THAT(error_of("[http]\nlisten = \"0.0.0.0:7422\"\n"), Catch::Contains("not a loopback address") && Catch::Contains("token_file"));
  CHECK_THAT(error_of("[http]\nlisten = \"localhost:7422\"\n"), Catch::Contains("is not an IP address"));
  CHECK_NOTHROW(parse_config("[http]\nlisten = \"0.0.0.0:7422\"\ntoken_file = \"/etc/cairn/http.token\"\n", "ctl.toml"));
  CHECK(parse_config("[http]\nlisten = \"\"\n", "ctl.toml").http_listen.empty());
}

TEST_CASE("the verify interval: 6 h by default, a duration from 1min to 30d") {
  CHECK(parse_config("", "ctl.toml").verify_interval_seconds == 6 * 3600);
  CHECK(parse_config("[verify]\ninterval = \"30min\"\n", "ctl.toml").verify_interval_seconds == 1800);
  CHECK(parse_config("[verify]\ninterval = \"1d\"\n", "ctl.toml").verify_interval_seconds == 86400);
  CHECK_THAT(error_of("[verify]\ninterval = \"10s\"\n"), Catch::Contains("ctl.toml:2:12: 'verify.interval' is '10s'"));
  CHECK_THAT(error_of("[verify]\ninterval = \"often\"\n"), Catch::Contains("must be a duration from 1min to 30d"));
  CHECK_THAT(error_of("[verify]\nevery = \"1h\"\n"), Catch::Contains("unknown key 'verify.every'"));
}

TEST_CASE("a repository URL carrying a secret is refused naming file, line and repository, never the secret") {
  for (const std::string path : {"s3:https://AKIDXYZ:SECRETXYZ@host:9000/bucket/prefix", "s3://AKIDXYZ:SECRETXYZ@bucket",
                                 "azure://acct/container/prefix?sv=2024&sig=SECRETXYZ"}) {
    CAPTURE(path);
    std::string e = error_of("[[repository]]\nname = \"offsite\"\npassword_file = \"/p\"\npath = \"" + path + "\"\n");
    CHECK_THAT(e, Catch::StartsWith("ctl.toml:4:") && Catch::Contains("repository 'offsite'") && Catch::Contains("carries credentials") &&
                      Catch::Contains("***") && Catch::Contains("credentials_file"));
    CHECK(e.find("SECRETXYZ") == std::string::npos);
    CHECK(e.find("AKIDXYZ") == std::string::npos);
  }
  CHECK_NOTHROW(parse_config("[[repository]]\nname = \"o\"\npassword_file = \"/p\"\npath = \"s3:https://host:9000/b/p\"\n", "ctl.toml"));
}
