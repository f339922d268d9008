#include "common/server/grpc_status.h"

#include <string>

#include "google/protobuf/any.pb.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace kvstore {

// Both enums follow google.rpc.Code (0..16); a value outside that range (never
// produced by either library) is reported as UNKNOWN rather than cast blindly.
namespace {
constexpr int kMaxCode = 16;  // UNAUTHENTICATED in both.

static_assert(static_cast<int>(absl::StatusCode::kCancelled) == grpc::StatusCode::CANCELLED);
static_assert(static_cast<int>(absl::StatusCode::kFailedPrecondition) ==
              grpc::StatusCode::FAILED_PRECONDITION);
static_assert(static_cast<int>(absl::StatusCode::kUnavailable) == grpc::StatusCode::UNAVAILABLE);
static_assert(static_cast<int>(absl::StatusCode::kUnauthenticated) ==
              grpc::StatusCode::UNAUTHENTICATED);
static_assert(kMaxCode == grpc::StatusCode::UNAUTHENTICATED);

// The payload key of an absl::Status is a type URL, as Any's.
constexpr char kErrorInfoTypeUrl[] = "type.googleapis.com/google.rpc.ErrorInfo";

std::optional<ErrorInfo> FromProto(const google::rpc::ErrorInfo& proto) {
  ErrorInfo info;
  info.reason = proto.reason();
  info.metadata.insert(proto.metadata().begin(), proto.metadata().end());
  return info;
}
}  // namespace

absl::Status WithErrorInfo(absl::Status status, const ErrorInfo& info) {
  if (status.ok()) return status;
  google::rpc::ErrorInfo proto;
  proto.set_reason(info.reason);
  proto.set_domain(kErrorDomain);
  for (const auto& [key, value] : info.metadata) (*proto.mutable_metadata())[key] = value;
  status.SetPayload(kErrorInfoTypeUrl, absl::Cord(proto.SerializeAsString()));
  return status;
}

std::optional<ErrorInfo> ErrorInfoOf(const absl::Status& status) {
  auto payload = status.GetPayload(kErrorInfoTypeUrl);
  if (!payload) return std::nullopt;
  google::rpc::ErrorInfo proto;
  if (!proto.ParseFromString(std::string(*payload))) return std::nullopt;
  return FromProto(proto);
}

std::optional<ErrorInfo> ErrorInfoOf(const grpc::Status& status) {
  if (status.error_details().empty()) return std::nullopt;
  google::rpc::Status details;
  if (!details.ParseFromString(status.error_details())) return std::nullopt;
  for (const google::protobuf::Any& any : details.details()) {
    google::rpc::ErrorInfo proto;
    if (any.type_url() == kErrorInfoTypeUrl && proto.ParseFromString(any.value())) {
      return FromProto(proto);
    }
  }
  return std::nullopt;
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  int code = static_cast<int>(status.code());
  if (code <= 0 || code > kMaxCode) code = grpc::StatusCode::UNKNOWN;
  auto info = status.GetPayload(kErrorInfoTypeUrl);
  if (!info) return grpc::Status(static_cast<grpc::StatusCode>(code), std::string(status.message()));
  google::rpc::Status details;
  details.set_code(code);
  details.set_message(std::string(status.message()));
  google::protobuf::Any* any = details.add_details();
  any->set_type_url(kErrorInfoTypeUrl);
  any->set_value(std::string(*info));
  return grpc::Status(static_cast<grpc::StatusCode>(code), std::string(status.message()),
                      details.SerializeAsString());
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  int code = static_cast<int>(status.error_code());
  if (code <= 0 || code > kMaxCode) code = static_cast<int>(absl::StatusCode::kUnknown);
  absl::Status out(static_cast<absl::StatusCode>(code), status.error_message());
  if (std::optional<ErrorInfo> info = ErrorInfoOf(status)) return WithErrorInfo(out, *info);
  return out;
}

}  // namespace kvstore
