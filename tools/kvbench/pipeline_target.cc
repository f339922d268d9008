#include "tools/kvbench/pipeline_target.h"

#include <chrono>
#include <deque>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/client_context.h"
#include "tools/kvbench/kvstore_requests.h"

namespace kvstore::bench {

namespace v1 = ::kvstore::v1;
using Clock = std::chrono::steady_clock;

struct PipelineTarget::Slot {
  uint64_t id = 0;
  Stream* stream = nullptr;
  std::mt19937_64 rng;
  bool in_flight = false;  // Touched only by its stream's reactions (and Start).
  Clock::time_point start;
  SlotStats stats;
};

// One bidirectional stream. Requests queue for its single outstanding write;
// a read is always outstanding. Its reactions run on gRPC threads, one at a
// time per kind; OnDone comes after every other.
class PipelineTarget::Stream final
    : public grpc::ClientBidiReactor<v1::PipelineRequests, v1::PipelineResponses> {
 public:
  Stream(PipelineTarget* target, v1::KeyValue::Stub* stub) : target_(target) {
    stub->async()->Pipeline(&context_, this);
    StartRead(&incoming_);
    StartCall();
  }

  // Queues `request`; the requests queued while a message is being written go
  // together in the next one.
  void Send(v1::PipelineRequest request) {
    const v1::PipelineRequests* next = nullptr;
    {
      absl::MutexLock lock(&mu_);
      // The front may be in flight: never added to. A cap keeps messages far
      // below servers' receive limits.
      constexpr int kMaxRequestsPerMessage = 256;
      if (queue_.size() < 2 || queue_.back().requests_size() >= kMaxRequestsPerMessage) {
        queue_.emplace_back();
      }
      *queue_.back().add_requests() = std::move(request);
      if (writing_) return;
      writing_ = true;
      next = &queue_.front();
    }
    StartWrite(next);
  }

  // No more requests: half-closes once the queue is written.
  void Close() {
    bool now = false;
    {
      absl::MutexLock lock(&mu_);
      closing_ = true;
      now = !writing_ && !writes_done_ && !ended_;
      writes_done_ |= now;
    }
    if (now) StartWritesDone();
  }

  void Cancel() { context_.TryCancel(); }

  bool WaitEnded(absl::Duration grace) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&ended_), grace);
  }

  void OnWriteDone(bool ok) override {
    const v1::PipelineRequests* next = nullptr;
    bool writes_done = false;
    {
      absl::MutexLock lock(&mu_);
      queue_.pop_front();
      if (!ok) queue_.clear();  // Broken: OnDone says why.
      if (!queue_.empty()) {
        next = &queue_.front();
      } else {
        writing_ = false;
        writes_done = ok && closing_ && !writes_done_;
        writes_done_ |= writes_done;
      }
    }
    if (next != nullptr) StartWrite(next);
    if (writes_done) StartWritesDone();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // The stream ended; OnDone follows.
    for (const v1::PipelineResponse& answer : incoming_.responses()) target_->OnAnswer(answer);
    incoming_.Clear();
    StartRead(&incoming_);
  }

  void OnDone(const grpc::Status& status) override {
    target_->OnStreamDone(this, status);
    absl::MutexLock lock(&mu_);
    ended_ = true;
  }

 private:
  PipelineTarget* const target_;
  grpc::ClientContext context_;
  v1::PipelineResponses incoming_;
  absl::Mutex mu_;
  // Messages to write; the front is being written while writing_.
  std::deque<v1::PipelineRequests> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool writes_done_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
};

PipelineTarget::PipelineTarget(const BenchConfig& config, const ClientSecurity& security)
    : config_(config),
      unary_(config, security),
      keys_(config.distribution, config.keyspace),
      value_(config.value_size, 'v') {}

PipelineTarget::~PipelineTarget() {
  for (auto& stream : streams_) {
    if (!stream->WaitEnded(absl::ZeroDuration())) {
      stream->Cancel();
      stream->WaitEnded(absl::InfiniteDuration());  // Cancelled streams end promptly.
    }
  }
}

absl::Status PipelineTarget::Connect() {
  if (absl::Status s = unary_.Connect(); !s.ok()) return s;
  // One request over a stream: a server from before Pipeline has none.
  auto stub = v1::KeyValue::NewStub(unary_.channel(0));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       absl::ToChronoMicroseconds(config_.connect_timeout));
  auto stream = stub->Pipeline(&context);
  v1::PipelineRequests request;
  request.add_requests()->mutable_get()->set_key(KeyName(0));
  v1::PipelineResponses answer;
  if (stream->Write(request)) {
    stream->WritesDone();
    while (stream->Read(&answer)) {
    }
  }
  const grpc::Status status = stream->Finish();
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
    return absl::FailedPreconditionError(absl::StrCat(
        config_.host, ":", config_.port,
        " does not serve KeyValue/Pipeline (leave out --pipeline): ", status.error_message()));
  }
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "probe Pipeline stream: ", CodeName(status.error_code()), ": ", status.error_message()));
  }
  return absl::OkStatus();
}

absl::Status PipelineTarget::Preload() { return unary_.Preload(); }

void PipelineTarget::Start(RunControl* control) {
  control_ = control;
  for (uint64_t i = 0; i < config_.channels; ++i) {
    streams_.push_back(std::make_unique<Stream>(this, unary_.stub(i)));
  }
  for (uint64_t i = 0; i < config_.concurrency; ++i) {
    auto slot = std::make_unique<Slot>();
    slot->id = i;
    slot->stream = streams_[i % streams_.size()].get();
    slot->rng.seed(config_.seed * 1'000'003 + i);
    slots_.push_back(std::move(slot));
  }
  {
    absl::MutexLock lock(&mu_);
    active_ = slots_.size();
  }
  for (const auto& slot : slots_) Issue(slot.get());
}

void PipelineTarget::Issue(Slot* slot) {
  const bool is_read = NextIsRead(config_.workload, slot->rng);
  v1::PipelineRequest request;
  request.set_id(slot->id);
  if (config_.batch == 1 && is_read) {
    FillGet(config_, keys_, slot->rng, request.mutable_get());
  } else if (config_.batch == 1) {
    FillSet(config_, keys_, value_, slot->rng, request.mutable_set());
  } else if (is_read) {
    FillMultiGet(config_, keys_, slot->rng, request.mutable_multi_get());
  } else {
    FillMultiSet(config_, keys_, value_, slot->rng, request.mutable_multi_set());
  }
  slot->in_flight = true;
  slot->start = Clock::now();
  slot->stream->Send(std::move(request));
}

void PipelineTarget::OnAnswer(const v1::PipelineResponse& answer) {
  if (answer.id() >= slots_.size() || !slots_[answer.id()]->in_flight) return;  // Not ours.
  Slot* slot = slots_[answer.id()].get();
  slot->in_flight = false;
  CountAnswer(config_, answer.status().code(), &answer.multi_get(), &answer.multi_set(),
              Clock::now() - slot->start, control_, &slot->stats);
  if (control_->phase.load(std::memory_order_acquire) == Phase::kStop) {
    SlotStopped();
    return;
  }
  Issue(slot);
}

void PipelineTarget::OnStreamDone(Stream* stream, const grpc::Status& status) {
  const bool measuring = control_->phase.load(std::memory_order_acquire) == Phase::kMeasure;
  for (const auto& slot : slots_) {
    if (slot->stream != stream || !slot->in_flight) continue;
    slot->in_flight = false;
    if (measuring) {
      ++slot->stats.calls;
      slot->stats.AddError(CodeName(status.ok() ? grpc::StatusCode::UNKNOWN : status.error_code()),
                           config_.batch);
    }
    SlotStopped();
  }
}

void PipelineTarget::SlotStopped() {
  absl::MutexLock lock(&mu_);
  --active_;
}

bool PipelineTarget::Drain(absl::Duration grace) {
  const absl::Time deadline = absl::Now() + grace;
  bool all = false;
  {
    absl::MutexLock lock(&mu_);
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return active_ == 0; };
    all = mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
  }
  for (auto& stream : streams_) stream->Close();
  for (auto& stream : streams_) {
    if (!stream->WaitEnded(std::max(absl::ZeroDuration(), deadline - absl::Now()))) {
      stream->Cancel();
      all = false;
    }
  }
  return all;
}

SlotStats PipelineTarget::Collect() {
  SlotStats total;
  for (const auto& slot : slots_) total.Merge(slot->stats);
  return total;
}

}  // namespace kvstore::bench
