// Signs requests with common/repo/storage/s3/sigv4: one JSON object a line on
// stdin ({"method","host","path","query":[[n,v]],"headers":[[n,v]],
// "payload_hash","region","service","date","access_key","secret_key","token"}),
// one line out ({"authorization": ...}). For the comparison with botocore only.
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/repo/storage/s3/sigv4.h"

int main() {
  using namespace cairn::repo::storage::s3;
  std::string line;
  while (std::getline(std::cin, line)) {
    auto j = nlohmann::json::parse(line);
    SignRequest r;
    r.method = j["method"];
    r.host = j["host"];
    r.path = j["path"];
    for (auto& q : j["query"]) r.query.emplace_back(q[0].get<std::string>(), q[1].get<std::string>());
    for (auto& h : j["headers"]) r.headers.emplace_back(h[0].get<std::string>(), h[1].get<std::string>());
    r.payload_hash = j["payload_hash"];
    r.s3 = j["service"] == "s3";
    SigningKey k{j["access_key"], j["secret_key"], j.value("token", std::string())};
    Signed s = sign(r, k, j["region"], j["service"], j["date"]);
    nlohmann::json out;
    for (auto& [n, v] : s.headers) out[n] = v;
    out["canonical_request"] = s.canonical_request;
    std::cout << out.dump() << "\n" << std::flush;
  }
}
