#include "services/router/backend_channels.h"

#include "absl/container/flat_hash_set.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace kvstore {

std::shared_ptr<v1::KeyValue::Stub> BackendChannels::Stub(const std::string& address) {
  absl::MutexLock lock(&mu_);
  return StubLocked(address);
}

std::shared_ptr<v1::KeyValue::Stub> BackendChannels::StubLocked(const std::string& address) {
  auto it = backends_.find(address);
  if (it != backends_.end()) return it->second.stub;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(max_message_bytes_);
  args.SetMaxSendMessageSize(max_message_bytes_);
  // A restarted shard should be found again within about a second, not after
  // gRPC's default backoff of up to two minutes. Requests do not wait for a
  // connection (they fail fast with UNAVAILABLE), so this only bounds how
  // long a node that came back stays unused.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // Each backend gets its own connection even if another channel in this
  // process (a test's client, say) talks to the same address.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  Backend backend;
  backend.channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  backend.stub = v1::KeyValue::NewStub(backend.channel);
  std::shared_ptr<v1::KeyValue::Stub> stub = backend.stub;
  backends_.emplace(address, std::move(backend));
  return stub;
}

void BackendChannels::Retain(const std::vector<std::string>& addresses) {
  absl::flat_hash_set<std::string> keep(addresses.begin(), addresses.end());
  absl::MutexLock lock(&mu_);
  for (auto it = backends_.begin(); it != backends_.end();) {
    if (keep.contains(it->first)) {
      ++it;
    } else {
      backends_.erase(it++);
    }
  }
  for (const std::string& address : keep) {
    StubLocked(address);
    backends_[address].channel->GetState(/*try_to_connect=*/true);
  }
}

}  // namespace kvstore
