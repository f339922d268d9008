// Building blocks of an etcd Txn (compares and ops) and of key ranges, so the
// callers of EtcdClient::Txn (LeaderKey, later the in-sync set and kvctl) do
// not fill etcd's messages field by field. Pure functions, no I/O.
#ifndef KVSTORE_COMMON_COORD_TXN_H_
#define KVSTORE_COMMON_COORD_TXN_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "etcd/etcdserverpb/rpc.pb.h"

namespace kvstore::coord {

// The range_end that makes [prefix, end) every key starting with `prefix`:
// the prefix with its last byte below 0xff incremented and the bytes after it
// dropped; "\0" (every key >= prefix) when there is none (empty or all 0xff).
std::string PrefixEnd(absl::string_view prefix);

// key's create_revision == revision (0: the key does not exist).
etcdserverpb::Compare CreateRevisionIs(absl::string_view key, int64_t revision);
// key's mod_revision == revision.
etcdserverpb::Compare ModRevisionIs(absl::string_view key, int64_t revision);
// key's value == value (false when the key does not exist).
etcdserverpb::Compare ValueIs(absl::string_view key, absl::string_view value);

// Put of key = value, bound to `lease` (0: no lease; a put without the lease
// unbinds a leased key).
etcdserverpb::RequestOp PutOp(absl::string_view key, absl::string_view value, int64_t lease = 0);
// Delete of one key, or of every key under it when `prefix`.
etcdserverpb::RequestOp DeleteOp(absl::string_view key, bool prefix = false);
// Linearizable read of one key, or of every key under it when `prefix`.
etcdserverpb::RequestOp RangeOp(absl::string_view key, bool prefix = false);

}  // namespace kvstore::coord

#endif  // KVSTORE_COMMON_COORD_TXN_H_
