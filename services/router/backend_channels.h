// One long-lived gRPC channel (and KeyValue stub) per backend address, shared
// by every request the router forwards there.
#ifndef KVSTORE_SERVICES_ROUTER_BACKEND_CHANNELS_H_
#define KVSTORE_SERVICES_ROUTER_BACKEND_CHANNELS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "kvstore/v1/kv.grpc.pb.h"

namespace kvstore {

// Thread-safe.
class BackendChannels {
 public:
  // Channels accept messages up to `max_message_bytes` both ways.
  explicit BackendChannels(int max_message_bytes) : max_message_bytes_(max_message_bytes) {}
  BackendChannels(const BackendChannels&) = delete;
  BackendChannels& operator=(const BackendChannels&) = delete;

  // The stub for `address` (HOST:PORT), creating its channel on first use.
  // The caller's reference keeps the channel alive across a Retain.
  std::shared_ptr<v1::KeyValue::Stub> Stub(const std::string& address);

  // Drops the channels of addresses not in `addresses` (after a topology
  // reload) and starts connecting to those in it, so the first request to a
  // new node does not pay for the connection.
  void Retain(const std::vector<std::string>& addresses);

 private:
  std::shared_ptr<v1::KeyValue::Stub> StubLocked(const std::string& address)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int max_message_bytes_;
  absl::Mutex mu_;
  struct Backend {
    std::shared_ptr<grpc::Channel> channel;
    std::shared_ptr<v1::KeyValue::Stub> stub;
  };
  absl::flat_hash_map<std::string, Backend> backends_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_ROUTER_BACKEND_CHANNELS_H_
