// One long-lived gRPC channel (with its KeyValue and Admin stubs) per backend
// address, shared by every request the router forwards there and by the
// health probes.
//
// Channel lifetime. gRPC 1.51 tears down the thread pool of its callback API
// when the last channel that used it is destroyed; when that happens inside a
// callback (the callback held the last reference to a stub or ClientContext,
// both of which hold their channel), the pool thread frees itself and the
// process crashes ("double free", "prior > 0" in grpc_cq_internal_unref). So
// this class keeps a reference to every channel it made, even after Retain
// dropped its address: a dropped channel is only "retired", and destroyed by
// ReleaseRetired (called by the prober's own thread and on a reload, never
// from a callback) once nobody else holds it, or by the destructor. A callback may therefore drop
// its stubs and contexts freely: it never holds the last reference.
#ifndef KVSTORE_SERVICES_ROUTER_BACKEND_CHANNELS_H_
#define KVSTORE_SERVICES_ROUTER_BACKEND_CHANNELS_H_

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "common/security/credentials.h"
#include "grpcpp/channel.h"
#include "kvstore/v1/admin.grpc.pb.h"
#include "kvstore/v1/kv.grpc.pb.h"

namespace kvstore {

// Thread-safe. Destroy it only when no call made through its stubs is in
// flight (after the server's Shutdown and the prober's Stop).
class BackendChannels {
 public:
  // Channels accept messages up to `max_message_bytes` both ways, and use
  // `security` (TLS, tokens) for every call.
  explicit BackendChannels(int max_message_bytes, ClientSecurity security = {})
      : max_message_bytes_(max_message_bytes), security_(std::move(security)) {}
  BackendChannels(const BackendChannels&) = delete;
  BackendChannels& operator=(const BackendChannels&) = delete;

  // The stubs for `address` (HOST:PORT), creating its channel on first use.
  std::shared_ptr<v1::KeyValue::Stub> Stub(const std::string& address);
  std::shared_ptr<v1::Admin::Stub> AdminStub(const std::string& address);

  // Retires the channels of addresses not in `addresses` (after a topology
  // reload) and starts connecting to those in it, so the first request to a
  // new node does not pay for the connection. Not to be called from a gRPC
  // callback.
  void Retain(const std::vector<std::string>& addresses);

  // Destroys the retired channels that nothing else references any more.
  // Returns how many remain retired. Not to be called from a gRPC callback.
  size_t ReleaseRetired();

  // Reports a failed forwarded call to the observer set (for metrics). Set
  // it before the first call.
  using ErrorObserver = std::function<void(const std::string& address, grpc::StatusCode code)>;
  void set_error_observer(ErrorObserver observer) { on_error_ = std::move(observer); }
  void CallFailed(const std::string& address, grpc::StatusCode code) const {
    if (on_error_) on_error_(address, code);
  }

 private:
  struct Backend {
    std::shared_ptr<grpc::Channel> channel;
    std::shared_ptr<v1::KeyValue::Stub> kv;
    std::shared_ptr<v1::Admin::Stub> admin;
  };
  Backend& BackendLocked(const std::string& address) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int max_message_bytes_;
  const ClientSecurity security_;
  ErrorObserver on_error_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Backend> backends_ ABSL_GUARDED_BY(mu_);
  // Channels of dropped addresses, kept until no stub or context uses them.
  std::vector<std::shared_ptr<grpc::Channel>> retired_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_ROUTER_BACKEND_CHANNELS_H_
