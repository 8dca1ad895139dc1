#pragma once
// The simdjson parser that trees and index files are read with.
#include <simdjson.h>

#include <optional>

namespace cairn::repo {

// A parser keeps buffers as large as the largest document it has read: each thread
// reuses one for ordinary documents, and a huge one (a directory of millions of
// entries) gets its own in own, freed with it.
inline simdjson::dom::parser& json_parser(size_t doc_size, std::optional<simdjson::dom::parser>& own) {
  thread_local simdjson::dom::parser reused;
  return doc_size <= (16u << 20) ? reused : own.emplace();
}

}  // namespace cairn::repo
