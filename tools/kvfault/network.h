// The links of a fault run, each through its own TcpProxy (tcp_proxy.h):
//   "n0->n1"      replication: leader n0 pushes its log to follower n1 (n0's
//                 --followers, or kvctl promote --followers, names the proxy)
//   "client->n0"  the load's clients to node n0
//   "n0->etcd"    etcd mode: node n0 to etcd (its --etcd-endpoints), the only
//                 proxied links there (a leader dials the addresses members
//                 advertise in etcd, so replication and clients go direct)
// Both directions of a link's connections go through its proxy, so a fault
// on "n0->n1" cuts n0's stream to n1 and n1's acks alike. Admin calls, the
// driver's probes and the final replica comparison go direct.
//
// A proxy is made on first use, when its target's address is known. Faults
// are kept per link name, so a fault set on a link nobody uses yet (n1->n0
// before n1 leads) applies once it is made.
//
// Not thread-safe: the driver's main thread (cluster start, nemesis) is the
// only caller. The proxies themselves run their own threads.
#ifndef KVSTORE_TOOLS_KVFAULT_NETWORK_H_
#define KVSTORE_TOOLS_KVFAULT_NETWORK_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tools/kvfault/tcp_proxy.h"

namespace kvstore::fault {

class Network {
 public:
  explicit Network(uint64_t seed) : seed_(seed) {}
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  static std::string LinkName(const std::string& from, const std::string& to) {
    return from + "->" + to;
  }

  // The address `from` must dial to reach `to` (at `to_address`): its
  // link's proxy, made now if needed.
  absl::StatusOr<std::string> Route(const std::string& from, const std::string& to,
                                    const std::string& to_address);

  // Sets the faults of `link` (made or not).
  void Set(const std::string& link, const LinkFaults& faults);
  // Resets the open connections of `link`; returns how many (0 if unmade).
  int Reset(const std::string& link);

  LinkFaults faults(const std::string& link) const;
  // Made links, by name.
  std::vector<std::string> links() const;
  // "accepted 3, reset 1, 12345 B to target, 456 B back", or "not made".
  std::string Describe(const std::string& link) const;

 private:
  const uint64_t seed_;
  std::map<std::string, std::unique_ptr<TcpProxy>> proxies_;
  std::map<std::string, LinkFaults> faults_;
};

}  // namespace kvstore::fault

#endif  // KVSTORE_TOOLS_KVFAULT_NETWORK_H_
