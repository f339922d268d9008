// The one place where absl::Status meets grpc::Status. gRPC 1.51 ships no
// converter; the numeric codes of the two are the same, so codes map one to one.
#ifndef KVSTORE_COMMON_SERVER_GRPC_STATUS_H_
#define KVSTORE_COMMON_SERVER_GRPC_STATUS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"
#include "grpcpp/support/string_ref.h"

namespace kvstore {

// Same code, same message. An ErrorInfo attached by WithErrorInfo becomes the
// call's error details: a google.rpc.Status holding it, which gRPC sends in
// the "grpc-status-details-bin" trailer. Other payloads are dropped. An OK
// status becomes grpc::Status::OK.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Same code, same message, and the ErrorInfo of the details if there is one.
// OK becomes absl::OkStatus().
absl::Status FromGrpcStatus(const grpc::Status& status);

// google.rpc.ErrorInfo, the machine-readable half of an error. Reasons we send:
//   NOT_LEADER    a write (or leader read) refused by a node that does not lead
//                 its shard; nothing was applied, so it may be sent again.
//                 metadata: "leader" (host:port, absent when unknown) and
//                 "epoch" (the newest epoch the refusing node knows).
//   WRONG_SHARD   (FAILED_PRECONDITION) the key belongs to another shard under
//                 the ring the refusing node knows; nothing was done, so it may
//                 be sent to the owner. metadata: "ring_version" and "owner"
//                 (the owning shard's name).
//   RANGE_MOVING  (UNAVAILABLE) the key's range is held while it moves to
//                 another shard (a resharding cutover); nothing was done: retry
//                 once the ring moves past "ring_version" (metadata), or soon.
// In MultiGet and MultiSet answers (and Pipeline answers) a key's reason is
// its KeyError's `reason` (kv.proto), without the metadata.
inline constexpr char kErrorDomain[] = "kvstore.io";
inline constexpr char kReasonNotLeader[] = "NOT_LEADER";
inline constexpr char kReasonWrongShard[] = "WRONG_SHARD";
inline constexpr char kReasonRangeMoving[] = "RANGE_MOVING";
// The metadata keys of WRONG_SHARD and RANGE_MOVING.
inline constexpr char kMetadataRingVersion[] = "ring_version";
inline constexpr char kMetadataOwner[] = "owner";

// Request metadata a router puts on every write it forwards: the epoch of the
// shard's leader it believes in, in decimal (docs/failover.md, "Router
// epochs"). Absent or 0: unknown. A node that knows no epoch that new learns
// that a newer leader exists (ReplicationHooks::CheckRouterEpoch).
inline constexpr char kLeaderEpochKey[] = "kv-leader-epoch";

// The epoch kLeaderEpochKey names in `metadata` (a call's client metadata);
// 0 when absent or not a number.
template <typename Multimap>
uint64_t LeaderEpochIn(const Multimap& metadata) {
  auto it = metadata.find(kLeaderEpochKey);
  if (it == metadata.end()) return 0;
  uint64_t epoch = 0;
  if (!absl::SimpleAtoi(absl::string_view(it->second.data(), it->second.size()), &epoch)) return 0;
  return epoch;
}

struct ErrorInfo {
  std::string reason;
  std::map<std::string, std::string> metadata;
};

// `status` (not OK) carrying `info` in domain kErrorDomain.
absl::Status WithErrorInfo(absl::Status status, const ErrorInfo& info);
// The ErrorInfo attached to a status, if any.
std::optional<ErrorInfo> ErrorInfoOf(const absl::Status& status);
std::optional<ErrorInfo> ErrorInfoOf(const grpc::Status& status);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_SERVER_GRPC_STATUS_H_
