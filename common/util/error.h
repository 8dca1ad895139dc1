#pragma once
// One registry of error codes for the repository library and the CLI.
// Messages are lowercase, name things in 'quotes', and say what to do.
#include <stdexcept>
#include <string>
#include <string_view>

namespace cairn {

enum class Errc {
  ok = 0,
  io,             // an operating-system call failed
  not_found,      // a named object does not exist
  corrupt,        // data failed verification (hash, authentication, parse)
  wrong_key,      // no key slot opens with the given passphrase / key file
  locked,         // a conflicting lock is held
  no_repo,        // no repository at the given location
  no_space,       // the backend ran out of space
  invalid_input,  // bad argument, malformed config or file
  unsupported,    // a format version or feature this build does not know
  exists,         // something that must not exist does
  interrupted,    // cancelled by a signal
  denied,         // a store refused our credentials or this operation (authentication, permission)
  unavailable,    // a remote store did not answer usably (network, timeouts, 5xx) after every retry
};

std::string_view errc_name(Errc c);

class Error : public std::runtime_error {
 public:
  Error(Errc code, std::string message, int sys_errno = 0) : std::runtime_error(std::move(message)), code_(code), sys_errno_(sys_errno) {}
  Errc code() const noexcept { return code_; }
  // The errno of the failed system call (throw_errno), or 0.
  int sys_errno() const noexcept { return sys_errno_; }

 private:
  Errc code_;
  int sys_errno_ = 0;
};

// Builds an Error from errno with the operation and path named.
[[noreturn]] void throw_errno(std::string_view op, std::string_view path, int err);

}  // namespace cairn
