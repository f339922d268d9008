// Consistent-hash ring with virtual nodes: which shard owns a key. Pure: no
// I/O, no gRPC. Every router (and any client, in any language) that builds a
// ring from the same shard names and vnode count computes the same owners.
//
// The algorithm, exactly (docs/ring.md has a worked example):
//   hash(bytes)  = XXH64(bytes, seed 0), an unsigned 64-bit integer
//                  (xxHash's XXH64, as in libxxhash and `xxh64sum`).
//   key position = hash(key bytes).
//   tokens       = for each shard name S and each i in [0, vnodes):
//                  hash of the ASCII string S + "#" + decimal(i), with no
//                  leading zeros and no terminating NUL ("shard-0#0",
//                  "shard-0#1", ...), paired with S.
//   order        = tokens sorted by (hash ascending, shard name ascending,
//                  compared bytewise); so when two tokens have the same hash
//                  the one of the smaller shard name comes first.
//   owner(key)   = the shard of the first token in that order whose hash is
//                  >= the key position; if there is none, the shard of the
//                  first token (the ring wraps around).
// Equal hashes are thus a tie won by the bytewise-smaller shard name.
//
// A ring may drain one shard D (a shard being removed, docs/resharding.md):
// D keeps its tokens, but a token T of D whose successor is in `handed_to`
// belongs to that successor instead, where the successor is the shard of the
// first token after T in ring order (wrapping) that is not D's. So
//   owner(key)   = the shard S of the token found as above; if S is D and the
//                  successor of that token is in handed_to, the successor.
// With handed_to = every other shard, owners are exactly those of the ring
// without D; with handed_to empty, those of the ring without the drain.
#ifndef KVSTORE_COMMON_RING_HASH_RING_H_
#define KVSTORE_COMMON_RING_HASH_RING_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvstore {

// The shard a ring drains and the shards it has handed its ranges to so far
// (see the header comment). An empty `shard` means no drain.
struct RingDrain {
  std::string shard;
  std::vector<std::string> handed_to;  // Sorted, distinct, never `shard`.
  bool empty() const { return shard.empty(); }
  bool operator==(const RingDrain& o) const { return shard == o.shard && handed_to == o.handed_to; }
  bool operator!=(const RingDrain& o) const { return !(*this == o); }
};

class HashRing {
 public:
  // Tokens per shard unless the topology says otherwise. Chosen by measurement
  // (docs/ring.md, tests/bench/ring_balance.cc): over 2000 random sets of 3
  // shard names the largest shard got at most 1.097 x the mean share with
  // 1024 (never over 1.10), but up to 1.195 x with 256 (8 % of sets over 1.10).
  static constexpr int kDefaultVirtualNodes = 1024;
  // Bounds the memory of a ring built from an untrusted topology file.
  static constexpr int kMaxVirtualNodes = 1 << 16;

  // A ring over `shards` (at least one; names non-empty and distinct; order
  // does not matter for ownership, but shards() and Ownership() keep it) with
  // `vnodes` tokens each (1 to kMaxVirtualNodes). InvalidArgument otherwise.
  static absl::StatusOr<HashRing> Build(std::vector<std::string> shards,
                                        int vnodes = kDefaultVirtualNodes);
  // The same ring draining `drain.shard` (a shard of `shards`) into
  // `drain.handed_to` (other shards of `shards`); an empty drain is Build's
  // ring. InvalidArgument when a name is not in `shards`.
  static absl::StatusOr<HashRing> Build(std::vector<std::string> shards, int vnodes,
                                        const RingDrain& drain);

  // Immutable once built: safe to use from any number of threads. Movable;
  // not copyable (share it through a pointer).
  HashRing(HashRing&&) = default;
  HashRing& operator=(HashRing&&) = default;
  HashRing(const HashRing&) = delete;
  HashRing& operator=(const HashRing&) = delete;

  // XXH64(bytes, 0): the position of a key on the ring.
  static uint64_t KeyHash(absl::string_view key);
  // The position of token `i` of `shard`: KeyHash(shard + "#" + decimal(i)).
  static uint64_t TokenHash(absl::string_view shard, int i);

  // Index into shards() of the shard that owns `key`. O(log tokens).
  int OwnerIndex(absl::string_view key) const { return OwnerOfPosition(KeyHash(key)); }
  // Name of the shard that owns `key`.
  const std::string& Owner(absl::string_view key) const { return shards_[OwnerIndex(key)]; }
  // Index of the shard that owns ring position `position`.
  int OwnerOfPosition(uint64_t position) const;

  // The shard names, in the order given to Build.
  const std::vector<std::string>& shards() const { return shards_; }
  int vnodes() const { return vnodes_; }
  const RingDrain& drain() const { return drain_; }
  size_t token_count() const { return token_hashes_.size(); }
  // The token positions in ring order (ascending; equal hashes adjacent).
  const std::vector<uint64_t>& token_hashes() const { return token_hashes_; }

  // For each shard (same order as shards()), the fraction of the 2^64 ring
  // positions it owns, computed exactly from the tokens; the fractions sum to 1.
  std::vector<double> Ownership() const;

 private:
  HashRing(std::vector<std::string> shards, int vnodes, RingDrain drain,
           std::vector<uint64_t> token_hashes, std::vector<uint32_t> token_owners)
      : shards_(std::move(shards)),
        vnodes_(vnodes),
        drain_(std::move(drain)),
        token_hashes_(std::move(token_hashes)),
        token_owners_(std::move(token_owners)) {}

  std::vector<std::string> shards_;
  int vnodes_;
  RingDrain drain_;
  // Tokens in ring order, as two parallel arrays so the binary search touches
  // only the hashes.
  std::vector<uint64_t> token_hashes_;
  // Index into shards_: the token's owner, after the drain.
  std::vector<uint32_t> token_owners_;
};

}  // namespace kvstore

#endif  // KVSTORE_COMMON_RING_HASH_RING_H_
