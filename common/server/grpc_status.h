// The one place where absl::Status meets grpc::Status. gRPC 1.51 ships no
// converter; the numeric codes of the two are the same, so codes map one to one.
#ifndef KVSTORE_COMMON_SERVER_GRPC_STATUS_H_
#define KVSTORE_COMMON_SERVER_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace kvstore {

// Same code, same message. Payloads are dropped (gRPC's details field is not
// filled). An OK status becomes grpc::Status::OK.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Same code, same message; error_details are dropped. OK becomes absl::OkStatus().
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_SERVER_GRPC_STATUS_H_
