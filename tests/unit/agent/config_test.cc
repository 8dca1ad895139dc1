// The configuration is refused at start, with file:line and a reason, for
// every unknown key and bad value.
#include "agent/config.h"

#include <catch2/catch.hpp>

#include "agent/drivers/files/files_driver.h"
#include "agent_fixture.h"

using namespace cairn::agent;
using namespace cairn::agent::test;

namespace {

// Parses and returns the error; fails the test when the text is accepted.
ConfigError refused(const std::string& text) {
  try {
    parse_config(text, "agent.toml");
  } catch (const ConfigError& e) {
    return e;
  }
  FAIL("configuration was accepted:\n" << text);
  throw std::logic_error("unreachable");
}

size_t line_of(const std::string& text, const std::string& needle) {
  size_t at = text.find(needle);
  REQUIRE(at != std::string::npos);
  return size_t(std::count(text.begin(), text.begin() + long(at), '\n')) + 1;
}

}  // namespace

TEST_CASE("a valid configuration gives the declared components and defaults") {
  TempDir d;
  AgentConfig c = parse_config(base_config(d), "agent.toml");
  REQUIRE(c.name == "node-1");
  REQUIRE(c.key_dir == d.file("state") + "/keys");
  REQUIRE(c.replay_journal == d.file("state") + "/replay-journal.json");
  REQUIRE(c.heartbeat_interval_ms == 2000);
  REQUIRE(c.liveness == 5);
  REQUIRE(c.components.size() == 1);
  const ComponentDecl* comp = c.component("data");
  REQUIRE(comp);
  REQUIRE(comp->repository == "main");  // the only repository is the default
  REQUIRE(comp->driver->name() == "files");
  REQUIRE(comp->driver->has_restore_target("alternate"));
  REQUIRE_FALSE(comp->driver->has_restore_target("elsewhere"));
}

TEST_CASE("an unknown key is refused with its line") {
  TempDir d;
  std::string text = base_config(d) + "colour = \"blue\"\n";
  auto e = refused(text);
  REQUIRE(e.file() == "agent.toml");
  REQUIRE(e.line() == line_of(text, "colour"));
  REQUIRE_THAT(e.what(), Catch::Contains("unknown key 'colour'"));
}

TEST_CASE("an unknown key in the controller table is refused with its line") {
  TempDir d;
  std::string text = base_config(d);
  text.insert(text.find("signing_keys_file"), "heartbeat_intervall_ms = 5\n");
  auto e = refused(text);
  REQUIRE(e.line() == line_of(text, "heartbeat_intervall_ms"));
  REQUIRE_THAT(e.what(), Catch::Contains("[controller]"));
}

TEST_CASE("an unknown driver setting is refused with its line") {
  TempDir d;
  std::string text = base_config(d) + "pathz = [\"/srv\"]\n";
  auto e = refused(text);
  REQUIRE(e.line() == line_of(text, "pathz"));
  REQUIRE_THAT(e.what(), Catch::Contains("unknown key 'pathz'"));
}

TEST_CASE("a value of the wrong type or out of range is refused with its line") {
  TempDir d;
  std::string text = base_config(d);
  text.insert(text.find("signing_keys_file"), "liveness = \"five\"\n");
  auto e = refused(text);
  REQUIRE(e.line() == line_of(text, "liveness"));
  REQUIRE_THAT(e.what(), Catch::Contains("must be an integer"));

  text = base_config(d);
  text.insert(text.find("signing_keys_file"), "heartbeat_interval_ms = 5\n");
  e = refused(text);
  REQUIRE(e.line() == line_of(text, "heartbeat_interval_ms"));
  REQUIRE_THAT(e.what(), Catch::Contains("out of range"));
}

TEST_CASE("a TOML syntax error is refused with its line") {
  TempDir d;
  std::string text = base_config(d) + "broken = [\n";
  auto e = refused(text);
  REQUIRE(e.line() >= line_of(text, "broken"));
}

TEST_CASE("a password file readable by others is refused") {
  TempDir d;
  std::string text = base_config(d);
  ::chmod(d.file("repo.pass").c_str(), 0644);
  auto e = refused(text);
  REQUIRE(e.line() == line_of(text, "password_file"));
  REQUIRE_THAT(e.what(), Catch::Contains("chmod 600"));
}

TEST_CASE("a component naming an undeclared repository or an unknown driver is refused") {
  TempDir d;
  std::string text = base_config(d) + "repository = \"offsite\"\n";
  auto e = refused(text);
  REQUIRE(e.line() == line_of(text, "\"offsite\""));
  REQUIRE_THAT(e.what(), Catch::Contains("'offsite'"));

  text = base_config(d);
  text.replace(text.find("driver = \"files\""), 16, "driver = \"etcd3\"");
  e = refused(text);
  REQUIRE(e.line() == line_of(text, "etcd3"));
  REQUIRE_THAT(e.what(), Catch::Contains("unknown driver 'etcd3'"));
}

TEST_CASE("relative or '..' paths and a bad controller key are refused") {
  TempDir d;
  std::string text = base_config(d);
  text.replace(text.find("paths = [\""), 10, "paths = [\"relative/x\", \"");
  auto e = refused(text);
  REQUIRE_THAT(e.what(), Catch::Contains("absolute"));

  text = base_config(d);
  text.replace(text.find("paths = [\""), 10, "paths = [\"/srv/../etc/shadow\", \"");
  e = refused(text);
  REQUIRE_THAT(e.what(), Catch::Contains(".."));

  text = base_config(d);
  text.replace(text.find(kControllerKey), 40, "short");
  e = refused(text);
  REQUIRE(e.line() == line_of(text, "public_key"));
}

TEST_CASE("a duplicate component name is refused") {
  TempDir d;
  std::string text = base_config(d) + "\n[[component]]\nname = \"data\"\ndriver = \"files\"\npaths = [\"/srv\"]\n";
  auto e = refused(text);
  REQUIRE_THAT(e.what(), Catch::Contains("declared twice"));
}

TEST_CASE("load_config names the file it cannot read") {
  try {
    load_config("/nonexistent/agent.toml");
    FAIL("accepted");
  } catch (const ConfigError& e) {
    REQUIRE(e.file() == "/nonexistent/agent.toml");
  }
}

TEST_CASE("config_warnings names declared paths and repositories that do not exist") {
  TempDir d;
  AgentConfig c = parse_config(base_config(d), "agent.toml");
  auto w = config_warnings(c);  // neither data nor repo exists yet
  REQUIRE(w.size() == 2);
  REQUIRE_THAT(w[0], Catch::Contains("repository 'main': '" + d.file("repo") + "' does not exist"));
  REQUIRE_THAT(w[1], Catch::Contains("component 'data': declared path '" + d.file("data") + "' does not exist"));

  std::filesystem::create_directories(d.file("data"));
  std::filesystem::create_directories(d.file("repo"));
  w = config_warnings(c);  // a directory with no repository in it
  REQUIRE(w.size() == 1);
  REQUIRE_THAT(w[0], Catch::Contains("holds no cairn repository"));

  write_text(d.file("repo") + "/config", "x");
  REQUIRE(config_warnings(c).empty());
}

TEST_CASE("a control character is refused with its line before the TOML parser sees it") {
  // "[\x01'c" made toml++ assert (fuzz_agent_config): a crash, not a message.
  TempDir d;
  std::string text = base_config(d) + "[\x7f'c";
  auto e = refused(text);
  REQUIRE(e.line() == line_of(text, "[\x7f"));
  REQUIRE_THAT(e.what(), Catch::Contains("control character 0x7f is not allowed"));
  auto nul = refused(std::string("name = \"a\0b\"\n", 13));
  REQUIRE(nul.line() == 1);
  REQUIRE_THAT(nul.what(), Catch::Contains("control character 0x00"));
}

TEST_CASE("a malformed table header is refused with its line before the TOML parser sees it") {
  // "[;…" made toml++ 3.3.0 fail an assertion in parse_key() (fuzz): an
  // abort, or undefined behaviour under NDEBUG.
  TempDir d;
  for (const std::string bad : {"[;AAAA", "  [operator_ttl_seconds = 86400", "[/0.&.0.0:7420\"", "[", "[ ]", "[[x]", "[x] y", "[\"x]"}) {
    std::string before = base_config(d) + "\n";
    auto e = refused(before + bad + "\n");
    REQUIRE(e.file() == "agent.toml");
    REQUIRE(e.line() == size_t(std::count(before.begin(), before.end(), '\n')) + 1);
    std::string shown = bad.substr(bad.find('['));
    REQUIRE_THAT(e.what(), Catch::Contains("malformed table header '" + shown + "' (expected [name] or [[name]]"));
  }
}

TEST_CASE("an array holding '}' or a non-ASCII character outside strings is refused with its line") {
  TempDir d;
  std::string text = base_config(d) + "[[component]]\nname = \"b\"\ndriver = \"files\"\npaths = [\n  \"/x\",\n}]\n";
  auto e = refused(text);
  REQUIRE(e.line() == line_of(text, "}]"));
  REQUIRE_THAT(e.what(), Catch::Contains("'}' inside an array"));
  // toml++ 3.3.0 reaches TOML_UNREACHABLE on U+00A1..U+0499 where it looks for blanks.
  text = base_config(d) + "log_level = debug\xc3\xa9\n";
  e = refused(text);
  REQUIRE(e.line() == line_of(text, "log_level = debug"));
  REQUIRE_THAT(e.what(), Catch::Contains("non-ASCII character U+00E9 outside a string or comment"));
  REQUIRE(parse_config("# caf\xc3\xa9\nlog_level = \"info\" # \xc3\xa9\n" + base_config(d), "agent.toml").log_level == "info");
}

TEST_CASE("well-formed headers with quoted and dotted keys, blanks and comments still parse") {
  TempDir d;
  std::string text = base_config(d);
  text.replace(text.find("[controller]"), 12, "[ \"controller\" ]  # where plans come from");
  text.replace(text.find("[[repository]]"), 14, "[[ 'repository' ]]#r");
  text.replace(text.find("[[component]]"), 13, "\t[[component]] # c");
  text.replace(text.find("paths = [\""), 10, "paths = [\n  # [;not a header\n\"");
  AgentConfig c = parse_config(text, "agent.toml");
  REQUIRE(c.repositories.size() == 1);
  REQUIRE(c.components.size() == 1);
}

TEST_CASE("memory_budget takes a size, and refuses one that is malformed or too small") {
  TempDir d;
  REQUIRE_FALSE(parse_config(base_config(d), "agent.toml").memory_budget.has_value());  // derived at start
  REQUIRE(parse_config("memory_budget = \"256M\"\n" + base_config(d), "agent.toml").memory_budget == (256u << 20));
  REQUIRE(parse_config("memory_budget = \"1.5 GiB\"\n" + base_config(d), "agent.toml").memory_budget == (1536ull << 20));
  for (const char* bad : {"\"lots\"", "\"12X\"", "\"0\"", "\"\""}) {
    std::string text = std::string("\n\nmemory_budget = ") + bad + "\n" + base_config(d);
    auto e = refused(text);
    INFO(bad << ": " << e.what());
    REQUIRE(e.line() == 3);
    REQUIRE_THAT(e.what(), Catch::Contains("is not a size such as"));
  }
  auto e = refused("memory_budget = \"16M\"\n" + base_config(d));
  REQUIRE_THAT(e.what(), Catch::Contains("below the least a backup can run in, 96 MiB"));
  // A number is refused too: the unit must be said.
  REQUIRE_THAT(refused("memory_budget = 268435456\n" + base_config(d)).what(), Catch::Contains("memory_budget"));
}

TEST_CASE("a drill root that overlaps a component's data is refused, naming both") {
  TempDir d;
  // base_config's files component backs up d/data.
  for (const std::string& root : {d.file("data"), d.file("data") + "/drills", d.path()}) {
    std::string text = base_config(d) + "[drill]\nroot = \"" + root + "\"\n";
    auto e = refused(text);
    INFO(text);
    REQUIRE_THAT(e.what(), Catch::Contains("[drill] root '" + root + "' overlaps '" + d.file("data") + "' of component 'data'"));
    REQUIRE(e.line() == line_of(text, "[drill]"));
  }
  // Beside it, not overlapping (a name that only starts the same is no overlap).
  REQUIRE(parse_config(base_config(d) + "[drill]\nroot = \"" + d.file("data-drills") + "\"\n", "agent.toml").drill);
}

TEST_CASE("a [drill] section is read with its defaults, and bad values are refused with their line") {
  TempDir d;
  AgentConfig c = parse_config(base_config(d) + "[drill]\nroot = \"" + d.file("drills") + "/\"\n", "agent.toml");
  REQUIRE(c.drill);
  REQUIRE(c.drill->root == d.file("drills"));  // the trailing '/' dropped
  REQUIRE(c.drill->memory_max == (2ull << 30));
  REQUIRE(c.drill->deadline_seconds == 1800);
  REQUIRE(c.drill->disk_budget == 0);
  // Each driver's drill reads its own keys (agent/drivers/<name>/drill.cc).
  REQUIRE(c.drill->drill("postgresql")->keys()["postgresql_bin_dir"] == "/usr/lib/postgresql/15/bin");
  REQUIRE(c.drill->drill("postgresql")->keys()["postgresql_user"] == "postgres");
  REQUIRE(c.drill->user == "nobody");  // the servers of etcd, ZooKeeper, Prometheus and Kafka drills
  REQUIRE_FALSE(parse_config(base_config(d), "agent.toml").drill);

  auto unbounded =
      parse_config(base_config(d) + "[drill]\nroot = \"/srv/drills\"\nmemory_max = \"none\"\ndisk_budget = \"20G\"\n", "agent.toml");
  REQUIRE_FALSE(unbounded.drill->memory_max);
  REQUIRE(unbounded.drill->disk_budget == (20ull << 30));

  for (const auto& [bad, why] : std::vector<std::pair<std::string, std::string>>{
           {"root = \"drills\"", "absolute"},
           {"root = \"/\"", "not '/'"},
           {"root = \"/srv/d\"\nmemory_max = \"12M\"", "at least 64M"},
           {"root = \"/srv/d\"\ndisk_budget = \"lots\"", "not a size"},
           {"root = \"/srv/d\"\ndeadline_seconds = 1", "deadline_seconds"},
           {"root = \"/srv/d\"\nsandbox = \"x\"", "unknown key 'sandbox'"},
           {"root = \"/srv/d\"\npostgresql_user = \"root\"", "not root"},
           {"root = \"/srv/d\"\nuser = \"root\"", "'user' in [drill]: must name the unprivileged user"},
           {"root = \"/srv/d\"\nuser = \"\"", "not root"},
           {"root = \"/srv/d\"\npostgresql_bin_dir = \"bin\"", "absolute"},
       }) {
    std::string text = base_config(d) + "[drill]\n" + bad + "\n";
    auto e = refused(text);
    INFO(text);
    REQUIRE_THAT(e.what(), Catch::Contains(why));
    REQUIRE(e.line() > 0);
  }
}

TEST_CASE("a repository URL carrying a secret is refused with its line, never printed whole") {
  TempDir d;
  for (const std::string url : {"s3:https://AKIDXYZ:SECRETXYZ@host:9000/bucket/prefix", "azure://acct/c/p?sv=1&sig=SECRETXYZ",
                                "https://AKIDXYZ:SECRETXYZ@host/x"}) {
    CAPTURE(url);
    std::string text = base_config(d);
    std::string local = "path = \"" + d.file("repo") + "\"";
    text.replace(text.find(local), local.size(), "path = \"" + url + "\"");
    auto e = refused(text);
    CHECK(e.line() == line_of(text, url));
    CHECK_THAT(e.what(), Catch::Contains("repository 'main'") && Catch::Contains("carries credentials") && Catch::Contains("***") &&
                             Catch::Contains("credentials_file"));
    CHECK(std::string(e.what()).find("SECRETXYZ") == std::string::npos);
    CHECK(std::string(e.what()).find("AKIDXYZ") == std::string::npos);
  }
}
