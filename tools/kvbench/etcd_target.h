// EtcdTarget: drives etcd (a peer of design §6) through its v3 gRPC KV API,
// single-key Range for reads and Put for writes (proto/etcd/ holds our cut of
// etcd's API, shared with common/coord). Same shape as KvStoreTarget:
// `concurrency` slots on `channels` channels, one callback call in flight per
// slot, each completion starting the slot's next call; a slot whose call
// failed waits for the next Tick. Batches (Txn) are not supported: kvbench
// refuses --batch > 1 first.
#ifndef KVSTORE_TOOLS_KVBENCH_ETCD_TARGET_H_
#define KVSTORE_TOOLS_KVBENCH_ETCD_TARGET_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/channel.h"
#include "tools/kvbench/load_target.h"

namespace kvstore::bench {

class EtcdTarget : public LoadTarget {
 public:
  explicit EtcdTarget(const BenchConfig& config);
  ~EtcdTarget() override;
  EtcdTarget(const EtcdTarget&) = delete;
  EtcdTarget& operator=(const EtcdTarget&) = delete;

  absl::Status Connect() override;
  // One Put per key, kPreloadInFlight of them in flight (etcd has no
  // multi-key put outside Txn, whose size etcd caps at 128 operations).
  absl::Status Preload() override;
  void Start(RunControl* control) override;
  void Tick() override;
  bool Drain(absl::Duration grace) override;
  SlotStats Collect() override;

 private:
  struct Slot;

  // Starts the slot's next call. The slot must have none in flight.
  void Issue(Slot* slot);
  // Completion of the slot's call, on a gRPC callback thread.
  void OnDone(Slot* slot, const grpc::Status& status);

  const BenchConfig config_;
  const KeyChooser keys_;
  const std::string value_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<etcdserverpb::KV::Stub>> stubs_;
  std::vector<std::unique_ptr<Slot>> slots_;
  RunControl* control_ = nullptr;

  absl::Mutex mu_;
  std::vector<Slot*> parked_ ABSL_GUARDED_BY(mu_);  // failed; retried on Tick
  uint64_t active_ ABSL_GUARDED_BY(mu_) = 0;        // slots in flight or parked
};

}  // namespace kvstore::bench

#endif  // KVSTORE_TOOLS_KVBENCH_ETCD_TARGET_H_
