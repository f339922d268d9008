// The follower's side of kvstore.v1.Replication: accepts a leader's stream
// (after the epoch check in ReplicationNode::AcceptLeader), states its
// position, applies and logs what the leader sends (entries, or a snapshot
// followed by entries), and acks the index it has made durable.
#ifndef KVSTORE_SERVICES_REPLICATION_REPLICATION_SERVICE_H_
#define KVSTORE_SERVICES_REPLICATION_REPLICATION_SERVICE_H_

#include "common/security/access_policy.h"
#include "kvstore/v1/replication.grpc.pb.h"
#include "services/replication/node.h"

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

 private:
  ReplicationNode* const node_;
  const AccessPolicy* const access_;
};

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_REPLICATION_REPLICATION_SERVICE_H_
