// The replication library's transport (common/replication/transport.h) over
// gRPC: Replication.Stream to each follower, Admin.Status for positions,
// Replication.Promise for a promotion's promises. One
// channel per follower address, made on first use and kept.
#ifndef KVSTORE_SERVICES_REPLICATION_GRPC_TRANSPORT_H_
#define KVSTORE_SERVICES_REPLICATION_GRPC_TRANSPORT_H_

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/replication/transport.h"
#include "common/security/credentials.h"
#include "grpcpp/grpcpp.h"

namespace kvstore {

class GrpcReplicationTransport final : public ReplicationTransport {
 public:
  // TLS and tokens of the streams to the followers (default: plaintext).
  explicit GrpcReplicationTransport(ClientSecurity security = ClientSecurity())
      : security_(std::move(security)) {}

  std::unique_ptr<LeaderStream> Connect(const std::string& address) override;
  absl::StatusOr<v1::Position> AskPosition(const std::string& address,
                                           absl::Duration timeout) override;
  absl::StatusOr<v1::Position> Promise(const std::string& address,
                                       const v1::PromiseRequest& request,
                                       absl::Duration timeout) override;

 private:
  std::shared_ptr<grpc::Channel> ChannelTo(const std::string& address);

  const ClientSecurity security_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_REPLICATION_GRPC_TRANSPORT_H_
