#include "services/replication/replication_service.h"

#include "common/replication/follower_session.h"
#include "common/server/grpc_status.h"

namespace kvstore {
namespace {

class GrpcFollowerStream final : public FollowerStream {
 public:
  GrpcFollowerStream(grpc::ServerContext* context,
                     grpc::ServerReaderWriter<v1::FollowerMessage, v1::LeaderMessage>* stream)
      : context_(context), stream_(stream) {}
  bool Read(v1::LeaderMessage* message) override { return stream_->Read(message); }
  bool Write(const v1::FollowerMessage& message) override { return stream_->Write(message); }
  void Cancel() override { context_->TryCancel(); }

 private:
  grpc::ServerContext* const context_;
  grpc::ServerReaderWriter<v1::FollowerMessage, v1::LeaderMessage>* const stream_;
};

}  // namespace

grpc::Status ReplicationService::Stream(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::FollowerMessage, v1::LeaderMessage>* stream) {
  if (grpc::Status s = CheckAccess(access_, *context, Access::kCluster); !s.ok()) return s;
  GrpcFollowerStream adapter(context, stream);
  return ToGrpcStatus(RunFollowerSession(node_, &adapter));
}

grpc::Status ReplicationService::Promise(grpc::ServerContext* context,
                                         const v1::PromiseRequest* request,
                                         v1::Position* position) {
  if (grpc::Status s = CheckAccess(access_, *context, Access::kCluster); !s.ok()) return s;
  absl::StatusOr<v1::Position> promised = node_->PromiseEpoch(*request);
  if (!promised.ok()) return ToGrpcStatus(promised.status());
  *position = *std::move(promised);
  return grpc::Status::OK;
}

}  // namespace kvstore
