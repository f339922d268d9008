#include "services/replication/grpc_transport.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "kvstore/v1/admin.grpc.pb.h"
#include "kvstore/v1/replication.grpc.pb.h"

namespace kvstore {
namespace {

class GrpcLeaderStream final : public LeaderStream {
 public:
  explicit GrpcLeaderStream(v1::Replication::Stub* stub) { stream_ = stub->Stream(&context_); }
  bool Write(const v1::LeaderMessage& message) override { return stream_->Write(message); }
  bool Read(v1::FollowerMessage* message) override { return stream_->Read(message); }
  void Cancel() override { context_.TryCancel(); }
  absl::Status Finish() override {
    absl::MutexLock l(&mu_);
    if (!finished_) {
      const grpc::Status s = stream_->Finish();
      status_ =
          s.ok() ? absl::OkStatus()
                 : absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
      finished_ = true;
    }
    return status_;
  }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::LeaderMessage, v1::FollowerMessage>> stream_;
  absl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

// Holds the stub for as long as the stream lives.
class OwningLeaderStream final : public LeaderStream {
 public:
  explicit OwningLeaderStream(std::unique_ptr<v1::Replication::Stub> stub)
      : stub_(std::move(stub)), stream_(stub_.get()) {}
  bool Write(const v1::LeaderMessage& message) override { return stream_.Write(message); }
  bool Read(v1::FollowerMessage* message) override { return stream_.Read(message); }
  void Cancel() override { stream_.Cancel(); }
  absl::Status Finish() override { return stream_.Finish(); }

 private:
  std::unique_ptr<v1::Replication::Stub> stub_;
  GrpcLeaderStream stream_;
};

}  // namespace

std::shared_ptr<grpc::Channel> GrpcReplicationTransport::ChannelTo(const std::string& address) {
  absl::MutexLock l(&mu_);
  auto it = channels_.find(address);
  if (it != channels_.end()) return it->second;
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(64 << 20);
  args.SetMaxReceiveMessageSize(64 << 20);
  // Reconnect quickly after a follower restarts.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // A dedicated channel per follower: never shared with another node's traffic.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::shared_ptr<grpc::Channel> channel = CreateClientChannel(address, security_, args);
  channels_.emplace(address, channel);
  return channel;
}

std::unique_ptr<LeaderStream> GrpcReplicationTransport::Connect(const std::string& address) {
  return std::make_unique<OwningLeaderStream>(v1::Replication::NewStub(ChannelTo(address)));
}

absl::StatusOr<v1::Position> GrpcReplicationTransport::AskPosition(const std::string& address,
                                                                   absl::Duration timeout) {
  auto stub = v1::Admin::NewStub(ChannelTo(address));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  v1::StatusResponse status;
  const grpc::Status s = stub->Status(&context, v1::StatusRequest(), &status);
  if (!s.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                        absl::StrCat(address, ": ", s.error_message()));
  }
  v1::Position position;
  position.set_last_index(status.last_index());
  position.set_last_epoch(status.last_epoch());
  position.set_epoch(status.epoch());
  position.set_durable_index(status.durable_index());
  return position;
}

absl::StatusOr<v1::Position> GrpcReplicationTransport::Promise(const std::string& address,
                                                               const v1::PromiseRequest& request,
                                                               absl::Duration timeout) {
  auto stub = v1::Replication::NewStub(ChannelTo(address));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  v1::Position position;
  const grpc::Status s = stub->Promise(&context, request, &position);
  if (!s.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                        absl::StrCat(address, ": ", s.error_message()));
  }
  return position;
}

}  // namespace kvstore
