// kvstore.v1.Replication over gRPC, follower side: checks the caller's access,
// then runs the replication library's follower session on the stream
// (common/replication/follower_session.h).
#ifndef KVSTORE_SERVICES_REPLICATION_REPLICATION_SERVICE_H_
#define KVSTORE_SERVICES_REPLICATION_REPLICATION_SERVICE_H_

#include "common/replication/node.h"
#include "common/security/access_policy.h"
#include "kvstore/v1/replication.grpc.pb.h"

namespace kvstore {

// A synchronous service: each leader stream holds one server thread, and a
// node follows one leader at a time.
class ReplicationService final : public v1::Replication::Service {
 public:
  // `node` and `access` (null: every stream allowed) must outlive the service.
  explicit ReplicationService(ReplicationNode* node, const AccessPolicy* access = nullptr)
      : node_(node), access_(access) {}

  grpc::Status Stream(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::FollowerMessage, v1::LeaderMessage>* stream) override;
  grpc::Status Promise(grpc::ServerContext* context, const v1::PromiseRequest* request,
                       v1::Position* position) override;

 private:
  ReplicationNode* const node_;
  const AccessPolicy* const access_;
};

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_REPLICATION_REPLICATION_SERVICE_H_
