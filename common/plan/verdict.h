#pragma once
// The result of checking untrusted input: a value, or the wire ErrorCode and a
// lowercase message saying what was refused. Nothing here throws, because the
// input comes from the network and must never take a daemon down.
#include <optional>
#include <string>
#include <utility>

#include "proto/cairn.pb.h"
#include "proto/error_code.h"

namespace cairn::plan {

using ErrorCode = cairn::v1::ErrorCode;

using cairn::proto::error_code_name;

template <class T>
class [[nodiscard]] Verdict {
 public:
  static Verdict accept(T value) {
    Verdict v;
    v.value_ = std::move(value);
    return v;
  }
  static Verdict reject(ErrorCode code, std::string message) {
    Verdict v;
    v.code_ = code;
    v.message_ = std::move(message);
    return v;
  }
  template <class U>
  static Verdict reject(const Verdict<U>& other) {
    return reject(other.code(), other.message());
  }

  bool ok() const { return code_ == cairn::v1::ERROR_CODE_OK; }
  explicit operator bool() const { return ok(); }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // Only valid when ok().
  const T& value() const& { return *value_; }
  T& value() & { return *value_; }
  T&& value() && { return std::move(*value_); }
  const T* operator->() const { return &*value_; }

 private:
  Verdict() = default;
  ErrorCode code_ = cairn::v1::ERROR_CODE_OK;
  std::string message_;
  std::optional<T> value_;
};

}  // namespace cairn::plan
