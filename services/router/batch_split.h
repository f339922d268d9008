// Splitting a MultiGet/MultiSet by owning shard and putting the shards'
// answers back in the caller's order. Pure functions over the messages; the
// router sends the slices and calls these as answers arrive.
#ifndef KVSTORE_SERVICES_ROUTER_BATCH_SPLIT_H_
#define KVSTORE_SERVICES_ROUTER_BATCH_SPLIT_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kvstore/v1/kv.pb.h"

namespace kvstore {

// The items of one batch that one shard owns.
struct ShardSlice {
  int shard = 0;
  std::vector<int> positions;  // Indexes into the caller's batch, ascending.
};

// Groups positions 0..count-1 by `shard_of(position)`. Slices come in the
// order their shard first appears; every position is in exactly one slice.
std::vector<ShardSlice> SplitByShard(int count, const std::function<int(int)>& shard_of);

// The request to send to the slice's shard: its keys (items) in slice order,
// with the caller's read mode (ack).
v1::MultiGetRequest SliceRequest(const v1::MultiGetRequest& request, const ShardSlice& slice);
v1::MultiSetRequest SliceRequest(const v1::MultiSetRequest& request, const ShardSlice& slice);

// Sizes `into` to one empty result per item of the caller's batch.
void PrepareResults(int count, v1::MultiGetResponse* into);
void PrepareResults(int count, v1::MultiSetResponse* into);

// Moves the shard's answer for `slice` into the caller's results (sized by
// PrepareResults). An answer with a different number of results than the
// slice has items is not trusted: every item of the slice gets an INTERNAL
// error naming `shard_label` instead.
void GatherResults(const ShardSlice& slice, const std::string& shard_label,
                   v1::MultiGetResponse* from, v1::MultiGetResponse* into);
void GatherResults(const ShardSlice& slice, const std::string& shard_label,
                   v1::MultiSetResponse* from, v1::MultiSetResponse* into);

// Gives every item of `slice` the error `status` (not OK), its message
// prefixed with `shard_label` ("shard shard-1 at 127.0.0.1:50062") and the
// reason of its ErrorInfo if any, and clears anything else in those results.
void FailSlice(const ShardSlice& slice, const std::string& shard_label, const absl::Status& status,
               v1::MultiGetResponse* into);
void FailSlice(const ShardSlice& slice, const std::string& shard_label, const absl::Status& status,
               v1::MultiSetResponse* into);

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_ROUTER_BATCH_SPLIT_H_
