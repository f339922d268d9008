// PipelineTarget: drives a kvstore node over kvstore.v1.KeyValue/Pipeline, the
// streamed form of the API: one long-lived bidirectional stream per channel,
// `concurrency` requests in flight over them (slot i on stream i % channels),
// each answer (matched by its id, the slot's number) starting the slot's next
// request. With --batch > 1 a request is a multi_get or multi_set. Connect and
// Preload are the unary target's.
#ifndef KVSTORE_TOOLS_KVBENCH_PIPELINE_TARGET_H_
#define KVSTORE_TOOLS_KVBENCH_PIPELINE_TARGET_H_

#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/security/credentials.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "tools/kvbench/kvstore_target.h"
#include "tools/kvbench/load_target.h"

namespace kvstore::bench {

class PipelineTarget : public LoadTarget {
 public:
  explicit PipelineTarget(const BenchConfig& config, const ClientSecurity& security = {});
  ~PipelineTarget() override;
  PipelineTarget(const PipelineTarget&) = delete;
  PipelineTarget& operator=(const PipelineTarget&) = delete;

  // The unary target's checks, then one request over a stream: a server
  // without Pipeline is "unreachable", with a message saying so.
  absl::Status Connect() override;
  absl::Status Preload() override;
  void Start(RunControl* control) override;
  void Tick() override {}
  // Waits for the slots, then closes every stream and waits for it to end.
  bool Drain(absl::Duration grace) override;
  SlotStats Collect() override;

 private:
  class Stream;
  struct Slot;

  // Builds the slot's next request and sends it on the slot's stream.
  void Issue(Slot* slot);
  // An answer arrived (on a gRPC thread).
  void OnAnswer(const v1::PipelineResponse& answer);
  // A stream ended; slots still waiting on it count as failed and stop.
  void OnStreamDone(Stream* stream, const grpc::Status& status);
  // A slot will issue nothing more.
  void SlotStopped();

  const BenchConfig config_;
  KvStoreTarget unary_;  // Connect, Preload, and the channels.
  const KeyChooser keys_;
  const std::string value_;
  std::vector<std::unique_ptr<Stream>> streams_;
  std::vector<std::unique_ptr<Slot>> slots_;
  RunControl* control_ = nullptr;

  absl::Mutex mu_;
  uint64_t active_ ABSL_GUARDED_BY(mu_) = 0;  // Slots with a request in flight.
};

}  // namespace kvstore::bench

#endif  // KVSTORE_TOOLS_KVBENCH_PIPELINE_TARGET_H_
