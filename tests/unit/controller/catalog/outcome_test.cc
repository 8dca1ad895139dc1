// The rule that keeps partial data from being reported as success.
#include "controller/catalog/outcome.h"

#include <catch2/catch.hpp>

using namespace cairn::catalog;
using T = TaskState;

TEST_CASE("a set is complete only when every task succeeded") {
  std::vector<T> all_ok{T::succeeded, T::succeeded, T::succeeded};
  REQUIRE(derive_set_state(all_ok) == SetState::complete);
  std::vector<T> one{T::succeeded};
  REQUIRE(derive_set_state(one) == SetState::complete);
}

TEST_CASE("a set with some saved data and some missing is partial") {
  REQUIRE(derive_set_state(std::vector<T>{T::succeeded, T::failed}) == SetState::partial);
  REQUIRE(derive_set_state(std::vector<T>{T::succeeded, T::partial}) == SetState::partial);
  REQUIRE(derive_set_state(std::vector<T>{T::partial}) == SetState::partial);
  REQUIRE(derive_set_state(std::vector<T>{T::succeeded, T::missed}) == SetState::partial);
  REQUIRE(derive_set_state(std::vector<T>{T::succeeded, T::rejected}) == SetState::partial);
}

TEST_CASE("a set where no task saved anything is failed") {
  REQUIRE(derive_set_state(std::vector<T>{T::failed, T::missed, T::rejected}) == SetState::failed);
  REQUIRE(derive_set_state(std::vector<T>{T::rejected}) == SetState::failed);
  // Nothing saved is never success.
  REQUIRE(derive_set_state(std::vector<T>{}) == SetState::failed);
}

TEST_CASE("a set with any task still open is running") {
  for (T open : {T::pending, T::sent, T::accepted, T::running})
    REQUIRE(derive_set_state(std::vector<T>{T::succeeded, open, T::failed}) == SetState::running);
}

TEST_CASE("task transitions follow the state machine") {
  REQUIRE(can_transition(T::pending, T::sent));
  REQUIRE(can_transition(T::sent, T::accepted));
  REQUIRE(can_transition(T::sent, T::rejected));
  REQUIRE(can_transition(T::accepted, T::running));
  REQUIRE(can_transition(T::running, T::succeeded));
  REQUIRE(can_transition(T::running, T::partial));
  REQUIRE(can_transition(T::running, T::failed));
  REQUIRE(can_transition(T::sent, T::missed));
  REQUIRE(can_transition(T::pending, T::missed));
  REQUIRE(can_transition(T::accepted, T::succeeded));

  REQUIRE_FALSE(can_transition(T::pending, T::succeeded));
  REQUIRE_FALSE(can_transition(T::running, T::missed));
  REQUIRE_FALSE(can_transition(T::rejected, T::running));
  // Terminal states never move: a late result cannot rewrite history.
  for (T end : {T::succeeded, T::partial, T::failed, T::missed, T::rejected})
    for (int to = 0; to <= int(T::missed); ++to) REQUIRE_FALSE(can_transition(end, T(to)));
}

TEST_CASE("every non-success end needs a reason") {
  REQUIRE(needs_reason(T::failed));
  REQUIRE(needs_reason(T::partial));
  REQUIRE(needs_reason(T::rejected));
  REQUIRE(needs_reason(T::missed));
  REQUIRE_FALSE(needs_reason(T::succeeded));
  REQUIRE_FALSE(needs_reason(T::running));
}

TEST_CASE("state names round-trip") {
  for (int i = 0; i <= int(T::missed); ++i) REQUIRE(parse_task_state(to_string(T(i))) == T(i));
  for (int i = 0; i <= int(SetState::failed); ++i) REQUIRE(parse_set_state(to_string(SetState(i))) == SetState(i));
  REQUIRE_FALSE(parse_task_state("done").has_value());
}
