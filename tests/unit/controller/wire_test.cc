// Frames from the network: garbage, truncation and rule-breaking messages are
// refused with a code, never a crash.
#include "controller/wire.h"

#include <google/protobuf/stubs/logging.h>

#include <catch2/catch.hpp>
#include <random>

#include "proto/protocol.h"

using namespace cairn::controller;
namespace v1 = cairn::v1;

namespace {

// libprotobuf logs each malformed string; the fuzz loop below makes thousands.
const auto kQuiet = google::protobuf::SetLogHandler(nullptr);

std::vector<std::string> fleet(const v1::AgentMessage& m) { return {std::string(cairn::proto::kFleetProtocolId), m.SerializeAsString()}; }

v1::AgentMessage good_register() {
  v1::AgentMessage m;
  auto* r = m.mutable_register_();
  r->set_agent_name("node-1");
  r->set_hostname("node-1.example");
  auto* c = r->add_components();
  c->set_name("etc");
  c->set_driver("files");
  return m;
}

}  // namespace

TEST_CASE("a valid register parses") {
  auto p = parse_agent_message(fleet(good_register()));
  REQUIRE(p.ok());
  CHECK(p.message.register_().agent_name() == "node-1");
}

TEST_CASE("wrong frame counts and protocol ids are refused as unsupported") {
  auto m = good_register();
  CHECK(parse_agent_message({}).code == v1::ERROR_CODE_PROTOCOL_UNSUPPORTED);
  CHECK(parse_agent_message({"CAIRN-FLEET/1"}).code == v1::ERROR_CODE_PROTOCOL_UNSUPPORTED);
  CHECK(parse_agent_message({"CAIRN-FLEET/1", m.SerializeAsString(), "x"}).code == v1::ERROR_CODE_PROTOCOL_UNSUPPORTED);
  CHECK(parse_agent_message({"CAIRN-FLEET/2", m.SerializeAsString()}).code == v1::ERROR_CODE_PROTOCOL_UNSUPPORTED);
  // The operator protocol id is not the fleet's, and the other way round.
  CHECK(parse_agent_message({"CAIRN-OP/1", m.SerializeAsString()}).code == v1::ERROR_CODE_PROTOCOL_UNSUPPORTED);
  CHECK(parse_operator_request({"CAIRN-FLEET/1", ""}).code == v1::ERROR_CODE_PROTOCOL_UNSUPPORTED);
}

TEST_CASE("garbage and truncated frames are refused as malformed") {
  std::string bytes = good_register().SerializeAsString();
  for (size_t cut = 1; cut < bytes.size(); ++cut) {
    auto p = parse_agent_message({"CAIRN-FLEET/1", bytes.substr(0, cut)});
    // Some prefixes are valid protobuf; none may pass as a complete register.
    if (p.ok()) CHECK(p.message.register_().agent_name() != "node-1");
  }
  CHECK(parse_agent_message({"CAIRN-FLEET/1", "\xff\xff\xff\xff"}).code == v1::ERROR_CODE_MALFORMED_MESSAGE);
  // An empty message parses but has no body.
  auto empty = parse_agent_message({"CAIRN-FLEET/1", ""});
  CHECK(empty.code == v1::ERROR_CODE_MALFORMED_MESSAGE);
  CHECK(empty.detail == "message has no body");

  std::mt19937 rng(42);
  for (int i = 0; i < 2000; ++i) {
    std::string junk(rng() % 200, '\0');
    for (auto& c : junk) c = char(rng());
    auto p = parse_agent_message({"CAIRN-FLEET/1", junk});
    auto q = parse_operator_request({"CAIRN-OP/1", junk});
    (void)p;
    (void)q;  // reaching here without a crash is the point
  }
}

TEST_CASE("an oversized frame is refused") {
  std::string big(cairn::proto::kMaxMessageBytes + 1, 'a');
  CHECK(parse_agent_message({"CAIRN-FLEET/1", big}).code == v1::ERROR_CODE_MALFORMED_MESSAGE);
}

TEST_CASE("field rules are checked after parsing") {
  auto m = good_register();
  m.mutable_register_()->set_agent_name("");
  CHECK(parse_agent_message(fleet(m)).code == v1::ERROR_CODE_MALFORMED_MESSAGE);
  m.mutable_register_()->set_agent_name("has space");
  CHECK(parse_agent_message(fleet(m)).code == v1::ERROR_CODE_MALFORMED_MESSAGE);
  m.mutable_register_()->set_agent_name(std::string(129, 'a'));
  CHECK(parse_agent_message(fleet(m)).code == v1::ERROR_CODE_MALFORMED_MESSAGE);

  v1::AgentMessage r;
  r.mutable_task_result()->set_task_id("tk-1");
  CHECK(parse_agent_message(fleet(r)).detail == "'outcome' must be succeeded, partial or failed");
  r.mutable_task_result()->set_outcome(v1::TASK_OUTCOME_FAILED);
  CHECK(parse_agent_message(fleet(r)).ok());
  r.mutable_task_result()->set_outcome(v1::TaskOutcome(77));  // from a newer or broken peer
  CHECK_FALSE(parse_agent_message(fleet(r)).ok());

  v1::AgentMessage p;
  p.mutable_progress();
  CHECK(parse_agent_message(fleet(p)).detail == "'task_id' is empty or too long");
}

TEST_CASE("operator requests keep their request id when refused") {
  v1::OperatorRequest q;
  q.set_request_id("r-1");
  q.mutable_backup_show();  // no id
  auto p = parse_operator_request({"CAIRN-OP/1", q.SerializeAsString()});
  CHECK(p.code == v1::ERROR_CODE_MALFORMED_MESSAGE);
  CHECK(p.message.request_id() == "r-1");

  q.mutable_backup_create()->mutable_selector()->add_components("../../etc/shadow x");
  CHECK_FALSE(parse_operator_request({"CAIRN-OP/1", q.SerializeAsString()}).ok());
  q.mutable_backup_create()->mutable_selector()->clear_components();
  q.mutable_backup_create()->mutable_selector()->add_components("etc");
  CHECK(parse_operator_request({"CAIRN-OP/1", q.SerializeAsString()}).ok());
}

TEST_CASE("over-long text an agent reports is cut at a character boundary, and the result is kept") {
  v1::AgentMessage r;
  auto* tr = r.mutable_task_result();
  tr->set_task_id("tk-1");
  tr->set_outcome(v1::TASK_OUTCOME_PARTIAL);
  // 'é' is two bytes: after one ASCII byte, 3000 of them put a character
  // across the cut.
  std::string accents = "a";
  for (int i = 0; i < 3000; ++i) accents += "\xc3\xa9";
  auto* why = tr->add_reasons();
  why->set_code(v1::ERROR_CODE_ITEM_SKIPPED);
  why->set_detail(accents);
  why->set_item(std::string(100000, 'x'));
  auto p = parse_agent_message(fleet(r));
  REQUIRE(p.ok());
  const auto& kept = p.message.task_result().reasons(0);
  CHECK(kept.detail().size() <= kMaxAgentText);
  CHECK(kept.item().size() <= kMaxAgentText);
  CHECK(kept.detail().size() > kMaxAgentText - 32);
  CHECK(kept.detail().substr(kept.detail().size() - kTruncationMark.size()) == kTruncationMark);
  // Still valid UTF-8: only whole 'é's before the mark.
  std::string body = kept.detail().substr(0, kept.detail().size() - kTruncationMark.size());
  CHECK(body.size() % 2 == 1);
  CHECK(body.substr(body.size() - 2) == "\xc3\xa9");
  CHECK(p.message.task_result().outcome() == v1::TASK_OUTCOME_PARTIAL);

  v1::AgentMessage g;
  g.mutable_progress()->set_task_id("tk-1");
  g.mutable_progress()->set_current_item(std::string(5000, 'y'));
  auto pg = parse_agent_message(fleet(g));
  REQUIRE(pg.ok());
  CHECK(pg.message.progress().current_item().size() == kMaxAgentText);

  CHECK(truncate_utf8("short", 10) == "short");
}

TEST_CASE("a task result keeps at most 100 reasons and says how many more there were") {
  v1::AgentMessage r;
  auto* tr = r.mutable_task_result();
  tr->set_task_id("tk-1");
  tr->set_outcome(v1::TASK_OUTCOME_PARTIAL);
  for (int i = 0; i < 5000; ++i) {
    auto* why = tr->add_reasons();
    why->set_code(v1::ERROR_CODE_ITEM_SKIPPED);
    why->set_detail("cannot read");
    why->set_item("/srv/f" + std::to_string(i));
  }
  auto p = parse_agent_message(fleet(r));
  REQUIRE(p.ok());
  const auto& kept = p.message.task_result().reasons();
  REQUIRE(kept.size() == int(kMaxReasons));
  CHECK(kept[98].item() == "/srv/f98");
  CHECK(kept[99].code() == v1::ERROR_CODE_ITEM_SKIPPED);
  CHECK(kept[99].detail().rfind("4901 more reasons not kept", 0) == 0);
}

TEST_CASE("host names and versions with control characters are refused") {
  auto m = good_register();
  m.mutable_register_()->set_hostname("evil\x1b]0;pwned\x07");
  auto p = parse_agent_message(fleet(m));
  CHECK(p.code == v1::ERROR_CODE_MALFORMED_MESSAGE);
  CHECK_THAT(p.detail, Catch::Contains("'hostname'"));
  m = good_register();
  m.mutable_register_()->set_agent_version("1.0\r\n2.0");
  CHECK(parse_agent_message(fleet(m)).code == v1::ERROR_CODE_MALFORMED_MESSAGE);
  m = good_register();
  m.mutable_register_()->set_agent_version("0.1.0-dev");
  CHECK(parse_agent_message(fleet(m)).ok());
}
