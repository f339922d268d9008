// EtcdClient: the unary calls of etcd's v3 API (KV and Lease) that the
// coordination library makes, each with a deadline, over a list of endpoints.
//
// Endpoints. One channel per endpoint, created up front; calls go to the
// current one. A call that fails with UNAVAILABLE moves the client to the next
// endpoint and is retried there; after a full round of failures it pauses
// briefly (25 ms, doubling to 400 ms) and goes round again, until the call's
// deadline (call_timeout, for all attempts together). So a call fails with
// UNAVAILABLE only when no endpoint answered for call_timeout, and a restarted
// etcd is not reported as down while the channel reconnects. A retried write
// may have been applied by an earlier attempt: the callers' writes are
// idempotent or guarded (a campaign that finds the key held by its own lease
// counts as a win). Streams (lease keepalives, watches) are opened by their
// owners on CurrentChannel() and report a broken stream with
// ReportUnavailable, which moves to the next endpoint the same way.
//
// Channels reconnect with a short backoff (100 ms to 1 s), so a restarted etcd
// is found again within a second, and send HTTP/2 keepalive pings every 10 s
// (etcd refuses pings more often than every 5 s) so a silent peer breaks a
// stream instead of hanging it.
//
// Errors are the call's gRPC code as an absl::Status whose message names the
// method and the endpoint. Reads are linearizable (etcd's default).
//
// Thread-safe: every method may be called from any thread.
#ifndef KVSTORE_COMMON_COORD_ETCD_CLIENT_H_
#define KVSTORE_COMMON_COORD_ETCD_CLIENT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "etcd/mvccpb/kv.pb.h"
#include "grpcpp/channel.h"

namespace kvstore::coord {

struct EtcdClientOptions {
  // "host:port[,host:port...]", as --etcd-endpoints takes it ("http://" may
  // precede an entry; "https://" is refused: no TLS yet).
  std::string endpoints;
  // Deadline of a unary call, all its attempts together.
  absl::Duration call_timeout = absl::Seconds(2);
  // Told of every unary call once it ends (all attempts together), for
  // metrics; may be empty. Runs on the caller's thread: keep it cheap.
  std::function<void(absl::string_view method, absl::Duration took, absl::StatusCode code)> on_call;
};

struct RangeOptions {
  // Every key starting with the given key, in key order.
  bool prefix = false;
  // Read as of this revision (0: the latest). Below the compacted revision
  // etcd answers OUT_OF_RANGE.
  int64_t revision = 0;
};

struct RangeResult {
  int64_t revision = 0;  // The store's revision the read saw.
  std::vector<mvccpb::KeyValue> kvs;
};

// A lease as etcd granted it.
struct GrantedLease {
  int64_t id = 0;
  int64_t ttl_seconds = 0;
};

class EtcdClient {
 public:
  // INVALID_ARGUMENT when the endpoint list is empty or an entry is not
  // host:port. Does not connect: the first call does.
  static absl::StatusOr<std::unique_ptr<EtcdClient>> Create(const EtcdClientOptions& options);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  // ---- KV
  absl::StatusOr<RangeResult> Range(absl::string_view key, const RangeOptions& options = {});
  // Returns the revision of the put.
  absl::StatusOr<int64_t> Put(absl::string_view key, absl::string_view value, int64_t lease = 0);
  // Returns how many keys were deleted.
  absl::StatusOr<int64_t> DeleteRange(absl::string_view key, bool prefix = false);
  // The compares and both branches as given; `succeeded` says which ran.
  absl::StatusOr<etcdserverpb::TxnResponse> Txn(const etcdserverpb::TxnRequest& request);
  // Discards history below `revision` (watches from below it are canceled
  // with compact_revision). Operations and tests.
  absl::Status Compact(int64_t revision);

  // ---- Lease (the keepalive stream is Lease's, lease.h)
  absl::StatusOr<GrantedLease> LeaseGrant(int64_t ttl_seconds);
  absl::Status LeaseRevoke(int64_t id);
  // Seconds left; -1 when the lease has expired or never existed.
  absl::StatusOr<int64_t> LeaseTimeToLive(int64_t id);

  // ---- Streams
  // The channel of the current endpoint, for a stream's owner.
  std::shared_ptr<grpc::Channel> CurrentChannel() const;
  // A stream or call on `channel` failed as unavailable: if it is still the
  // current endpoint, move to the next one.
  void ReportUnavailable(const std::shared_ptr<grpc::Channel>& channel);
  // The current endpoint, "host:port" (for logs).
  std::string CurrentEndpoint() const;

  absl::Duration call_timeout() const { return call_timeout_; }

 private:
  EtcdClient(std::vector<std::string> endpoints, const EtcdClientOptions& options);

  // Runs `call(channel, context)` against the current endpoint with a fresh
  // context, moving on and retrying on UNAVAILABLE until the deadline.
  template <typename Call>
  absl::Status Invoke(absl::string_view method, Call call);

  const std::vector<std::string> endpoints_;
  const absl::Duration call_timeout_;
  const decltype(EtcdClientOptions::on_call) on_call_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;  // One per endpoint; fixed.

  mutable absl::Mutex mu_;
  size_t current_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kvstore::coord

#endif  // KVSTORE_COMMON_COORD_ETCD_CLIENT_H_
