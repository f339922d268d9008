#include "services/router/backend_channels.h"

#include <utility>

#include "absl/container/flat_hash_set.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace kvstore {

BackendChannels::Backend& BackendChannels::BackendLocked(const std::string& address) {
  auto it = backends_.find(address);
  if (it != backends_.end()) return it->second;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(max_message_bytes_);
  args.SetMaxSendMessageSize(max_message_bytes_);
  // A restarted shard should be found again within about a second, not after
  // gRPC's default backoff of up to two minutes. Requests do not wait for a
  // connection (they fail fast with UNAVAILABLE), so this only bounds how
  // long a node that came back stays unused.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // gRPC also takes this as the time a connection attempt may take to get the
  // server's HTTP/2 SETTINGS (as in common/coord/etcd_client.cc). At 100 ms,
  // shards slowed by load (ASan servers on a busy machine) were never
  // reached: "connection attempt timed out before receiving SETTINGS frame".
  // A refused connection still fails at once and is retried after the
  // backoff above.
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 2000);
  // Each backend gets its own connection even if another channel in this
  // process (a test's client, say) talks to the same address.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  Backend backend;
  backend.channel = CreateClientChannel(address, security_, args);
  backend.kv = v1::KeyValue::NewStub(backend.channel);
  backend.admin = v1::Admin::NewStub(backend.channel);
  return backends_.emplace(address, std::move(backend)).first->second;
}

std::shared_ptr<v1::KeyValue::Stub> BackendChannels::Stub(const std::string& address) {
  absl::MutexLock lock(&mu_);
  return BackendLocked(address).kv;
}

std::shared_ptr<v1::Admin::Stub> BackendChannels::AdminStub(const std::string& address) {
  absl::MutexLock lock(&mu_);
  return BackendLocked(address).admin;
}

void BackendChannels::Retain(const std::vector<std::string>& addresses) {
  absl::flat_hash_set<std::string> keep(addresses.begin(), addresses.end());
  absl::MutexLock lock(&mu_);
  for (auto it = backends_.begin(); it != backends_.end();) {
    if (keep.contains(it->first)) {
      ++it;
    } else {
      // The stubs go now (a request in flight holds its own reference); the
      // channel stays referenced from here until ReleaseRetired.
      retired_.push_back(std::move(it->second.channel));
      backends_.erase(it++);
    }
  }
  for (const std::string& address : keep) {
    BackendLocked(address).channel->GetState(/*try_to_connect=*/true);
  }
}

size_t BackendChannels::ReleaseRetired() {
  std::vector<std::shared_ptr<grpc::Channel>> unused;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = retired_.begin(); it != retired_.end();) {
      // Only retired_ holds it, and nothing can take a new reference to a
      // retired channel, so the count stays at one.
      if (it->use_count() == 1) {
        unused.push_back(std::move(*it));
        it = retired_.erase(it);
      } else {
        ++it;
      }
    }
  }
  const size_t remaining = [&] {
    absl::MutexLock lock(&mu_);
    return retired_.size();
  }();
  unused.clear();  // Destroyed here, outside the lock and outside any callback.
  return remaining;
}

}  // namespace kvstore
