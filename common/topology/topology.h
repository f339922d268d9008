// The cluster topology a router routes by: which shards exist, where each
// one's leader and replicas listen, and how many ring tokens each shard gets.
//
// File format (YAML):
//   vnodes: 1024              # optional: tokens per shard (HashRing default)
//   shards:                   # required, at least one
//     - name: shard-0         # required: 1-64 of [A-Za-z0-9._-], unique
//       leader: 127.0.0.1:50061              # required: HOST:PORT
//       replicas: [127.0.0.1:50071, 127.0.0.1:50072]   # optional, may be []
// No other keys are allowed at either level, and no address may appear twice
// in the whole file. The order of shards does not change which shard owns a
// key (see common/ring/hash_ring.h); renaming a shard does.
#ifndef KVSTORE_COMMON_TOPOLOGY_TOPOLOGY_H_
#define KVSTORE_COMMON_TOPOLOGY_TOPOLOGY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/ring/hash_ring.h"

namespace kvstore {

struct ShardTopology {
  std::string name;
  std::string leader;                 // HOST:PORT
  std::vector<std::string> replicas;  // HOST:PORT each; may be empty
  // The epoch `leader` leads, as etcd's leader key says (0: unknown, and
  // always for a topology file). Routers send it with each write.
  uint64_t leader_epoch = 0;
};

struct Topology {
  int vnodes = HashRing::kDefaultVirtualNodes;  // Tokens per shard.
  std::vector<ShardTopology> shards;
  // The version of the ring in etcd (<P>/ring) these shards and vnodes come
  // from; 0 for a topology file, or a cluster in etcd without a ring key.
  int64_t ring_version = 0;
  // The shard that ring drains, and to whom (common/ring/hash_ring.h); empty
  // for a topology file and a ring with no removal under way.
  RingDrain drain;

  // Names of the shards, in file order (what HashRing::Build takes).
  std::vector<std::string> ShardNames() const;
  // The ring these shards route by: names, vnodes and drain.
  absl::StatusOr<HashRing> BuildRing() const;
};

// Parses a topology from YAML text. `source` names it in errors (a file
// name). Every error is InvalidArgument and reads "topology SOURCE[:LINE]: what",
// naming the offending key or value: not YAML, not a map, unknown key, missing
// or empty `shards`, missing name or leader, duplicate shard name or address,
// malformed HOST:PORT, vnodes out of range.
absl::StatusOr<Topology> ParseTopology(absl::string_view yaml, const std::string& source);

// Reads and parses the file at `path`. A file that cannot be read is
// InvalidArgument naming it.
absl::StatusOr<Topology> LoadTopologyFile(const std::string& path);

// OK when `name` may name a shard: 1-64 bytes of [A-Za-z0-9._-], so it never
// holds the '#' of a ring token (docs/ring.md) or the '/' of an etcd key.
// INVALID_ARGUMENT saying why not. Topology files and `kvctl reshard` check
// names by this one rule.
absl::Status CheckShardName(absl::string_view name);

// OK when `address` is HOST:PORT with a non-empty host (a name, an IPv4
// address, or an IPv6 address in brackets) and a decimal port in 1..65535.
absl::Status CheckHostPort(absl::string_view address);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_TOPOLOGY_TOPOLOGY_H_
