#pragma once
// A repository location as a message may show it. Credentials are never taken
// from a URL (docs/configuration.md § Object stores), but one written into it
// anyway must not come back in the refusal, a log line or a summary.
#include <string>
#include <string_view>

namespace cairn::repo {

// loc with what could be a secret replaced by "***": a URL's userinfo
// ("s3:https://AKID:SECRET@host/b" -> "s3:https://***@host/b"; everything up
// to the last '@' before the query, as a key holding '/' may end the
// authority early), the value of each query parameter whose name says it
// holds one (sig, signature, token, key, secret, password, credential,
// auth...), a parameter without a name ("?SECRET"), and a fragment. Anything
// else, and a path (no "scheme://"), is returned as it is.
std::string redact_location(std::string_view loc);

// True when loc is a URL with an '@' (userinfo) before its query, a query or a
// fragment: the places a secret is put into a URL. Such a repository location
// is refused (no store's bucket, account or container name holds '@').
bool location_carries_secret(std::string_view loc);

}  // namespace cairn::repo
