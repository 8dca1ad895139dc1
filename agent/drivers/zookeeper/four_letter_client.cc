// The network half of four_letter.h (the parsers are in four_letter.cc, which
// unit tests link without the agent).
#include "agent/drivers/zookeeper/four_letter.h"
#include "agent/platform/socket_client.h"
#include "common/util/error.h"

namespace cairn::agent::zookeeper {

std::string four_letter(const std::string& address, const std::string& word, std::chrono::milliseconds timeout) {
  auto addr = platform::parse_socket_address(address);
  std::string reply = platform::socket_exchange(addr, word, timeout, 16 << 20);
  if (is_not_whitelisted(reply))
    throw Error(Errc::unsupported, "ZooKeeper at '" + address + "' refuses '" + word +
                                       "': it is not in the server's '4lw.commands.whitelist'; add it (the driver needs "
                                       "srvr, and uses ruok and mntr when allowed) and restart the server");
  return reply;
}

}  // namespace cairn::agent::zookeeper
