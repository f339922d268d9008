#include "common/kv/pipeline.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/server/grpc_status.h"

namespace kvstore {
namespace {

// gRPC is only called with mu_ released: a reaction may run on the calling
// thread. The reactor deletes itself once gRPC is done with the stream
// (OnDone) and every request it started has come back.
//
// One thread at a time, the pump (Pump), starts requests that were read and
// reads more messages, as far as the limits allow: fewer than max_in_flight
// requests unanswered, and fewer than max_held_bytes of answers waiting to
// be written. Every event (a message read, an answer, a write done, a
// cancellation) runs the pump unless another thread is running it, which
// then sees the event's change before it stops. While it runs, the stream is
// not finished (so not deleted under it): it is the pump that finishes it.
class PipelineReactor final
    : public grpc::ServerBidiReactor<v1::PipelineRequests, v1::PipelineResponses> {
 public:
  PipelineReactor(grpc::CallbackServerContext* context, const grpc::Status& admitted,
                  PipelineBackend* backend, size_t max_in_flight, size_t max_held_bytes,
                  PipelineCounters* counters)
      : backend_(backend),
        deadline_(context->deadline()),
        max_in_flight_(std::max<size_t>(1, max_in_flight)),
        max_held_bytes_(std::max<size_t>(1, max_held_bytes)),
        counters_(counters) {
    if (!admitted.ok()) {
      finished_ = true;
      reads_done_ = true;
      Finish(admitted);
      return;
    }
    reading_ = true;
    StartRead(&incoming_);
  }

  ~PipelineReactor() override { AddHeld(-static_cast<ptrdiff_t>(held_bytes_)); }

  void OnReadDone(bool ok) override {
    bool pump = false;
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      if (!ok) {  // The client half-closed, or the stream broke.
        reads_done_ = true;
      } else {
        // The requests wait to be started; the message is reused.
        for (v1::PipelineRequest& request : *incoming_.mutable_requests()) {
          auto op = std::make_unique<Op>();
          op->request.Swap(&request);
          unstarted_.push_back(std::move(op));
        }
        incoming_.Clear();
      }
      pump = ClaimPumpLocked();
    }
    if (pump) Pump();
  }

  void OnWriteDone(bool ok) override {
    const v1::PipelineResponses* next = nullptr;
    bool pump = false;
    {
      absl::MutexLock lock(&mu_);
      ReleaseLocked(to_write_.front().bytes);
      to_write_.pop_front();
      if (!ok) {  // The client is gone: nothing more can be sent.
        broken_ = true;
        for (const Outgoing& message : to_write_) ReleaseLocked(message.bytes);
        to_write_.clear();
      }
      // The answers that came while the last message was written go together.
      writing_ = !to_write_.empty();
      if (writing_) next = &to_write_.front().responses;
      pump = ClaimPumpLocked();
    }
    // The write cannot race Finish (writing_ holds it off) nor so OnDone.
    if (next != nullptr) StartWrite(next);
    if (pump) Pump();
  }

  void OnCancel() override {
    bool pump = false;
    {
      absl::MutexLock lock(&mu_);
      broken_ = true;
      pump = ClaimPumpLocked();
    }
    if (pump) Pump();
  }

  void OnDone() override {
    bool last = false;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      last = in_flight_ == 0;
    }
    if (last) delete this;
  }

 private:
  struct Op {
    v1::PipelineRequest request;
    v1::PipelineResponse response;
  };
  // One message of answers and its size, as counted against max_held_bytes_.
  struct Outgoing {
    v1::PipelineResponses responses;
    size_t bytes = 0;
  };

  // True when the caller is to run the pump: none runs, and the stream is not
  // done (then there is nothing left to start, read or finish).
  bool ClaimPumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (pumping_ || done_) return false;
    pumping_ = true;
    return true;
  }

  // Whether one more request may start (and, with none waiting, one more
  // message be read). Counts each time the answers' bytes are what stops it.
  bool MayStartLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (in_flight_ >= max_in_flight_) return false;
    if (held_bytes_ < max_held_bytes_) {
      paused_for_bytes_ = false;
      return true;
    }
    if (!paused_for_bytes_ && counters_ != nullptr) ++counters_->reads_paused_for_bytes;
    paused_for_bytes_ = true;
    return false;
  }

  // The pump, by the thread that claimed it (ClaimPumpLocked): starts what
  // may start, reads what may be read, until neither; then, with mu_ held,
  // lets go of the pump and finishes the stream if that is due. Touches
  // nothing of the reactor after that (it may be gone).
  void Pump() {
    for (;;) {
      // One request at a time: answers that come at once count before the next.
      std::unique_ptr<Op> start;
      bool read = false;
      std::optional<grpc::Status> finish;
      {
        absl::MutexLock lock(&mu_);
        if (broken_ || finished_) {
          unstarted_.clear();  // Never started: dropped with the stream.
        } else {
          if (!unstarted_.empty() && MayStartLocked()) {
            start = std::move(unstarted_.front());
            unstarted_.pop_front();
            ++in_flight_;
          } else if (unstarted_.empty() && !reading_ && !reads_done_ && MayStartLocked()) {
            reading_ = true;
            read = true;
          }
        }
        if (start == nullptr && !read) {
          pumping_ = false;
          finish = MaybeFinishLocked();
        }
      }
      if (start == nullptr && !read) {
        if (finish) Finish(*finish);
        return;
      }
      // A read's reaction and a request's answer may come on this thread:
      // they find the pump taken, and this loop sees what they changed.
      if (read) StartRead(&incoming_);
      if (start != nullptr) Dispatch(start.release());
    }
  }

  void Dispatch(Op* op) {
    op->response.set_id(op->request.id());
    auto done = [this, op](const grpc::Status& status) { Answer(op, status); };
    const v1::PipelineRequest& r = op->request;
    v1::PipelineResponse& a = op->response;
    switch (r.request_case()) {
      case v1::PipelineRequest::kGet:
        return backend_->PipelineGet(deadline_, &r.get(), a.mutable_get(), std::move(done));
      case v1::PipelineRequest::kSet:
        return backend_->PipelineSet(deadline_, &r.set(), a.mutable_set(), std::move(done));
      case v1::PipelineRequest::kDelete:
        return backend_->PipelineDelete(deadline_, &r.delete_(), a.mutable_delete_(),
                                        std::move(done));
      case v1::PipelineRequest::kMultiGet:
        return backend_->PipelineMultiGet(deadline_, &r.multi_get(), a.mutable_multi_get(),
                                          std::move(done));
      case v1::PipelineRequest::kMultiSet:
        return backend_->PipelineMultiSet(deadline_, &r.multi_set(), a.mutable_multi_set(),
                                          std::move(done));
      case v1::PipelineRequest::REQUEST_NOT_SET:
        break;
    }
    done(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      "the pipeline request has none of get, set, delete, multi_get, multi_set"));
  }

  // A request came back: queue its answer. Any thread.
  void Answer(Op* op, const grpc::Status& status) {
    std::unique_ptr<Op> owned(op);
    if (!status.ok()) {
      owned->response.clear_response();
      owned->response.mutable_status()->set_code(status.error_code());
      owned->response.mutable_status()->set_message(status.error_message());
      // A unary call would carry it as ErrorInfo (WRONG_SHARD, RANGE_MOVING).
      if (std::optional<ErrorInfo> info = ErrorInfoOf(status)) {
        owned->response.mutable_status()->set_reason(info->reason);
      }
    }
    const v1::PipelineResponses* write = nullptr;
    bool pump = false;
    bool last = false;
    {
      absl::MutexLock lock(&mu_);
      --in_flight_;
      if (!broken_ && !finished_) {
        // Joins the last message not being written yet, unless that one is
        // full; the message being written (the front) is never touched.
        const size_t bytes = owned->response.ByteSizeLong();
        if (to_write_.size() < 2 || to_write_.back().bytes + bytes > kMaxMessageBytes ||
            to_write_.back().responses.responses_size() >= kMaxAnswersPerMessage) {
          to_write_.emplace_back();
        }
        *to_write_.back().responses.add_responses() = std::move(owned->response);
        to_write_.back().bytes += bytes;
        HoldLocked(bytes);
        if (!writing_) {
          writing_ = true;
          write = &to_write_.front().responses;
        }
      }
      owned.reset();  // Its memory is in the answer now, or not needed.
      pump = ClaimPumpLocked();
      last = done_ && in_flight_ == 0;
    }
    // The write cannot race Finish (writing_ holds it off) nor so OnDone.
    if (write != nullptr) StartWrite(write);
    if (pump) Pump();
    if (last) delete this;
  }

  // The status to finish with once nothing more will be sent: the client has
  // half-closed and every answer is out, or the stream broke. Marks the
  // stream finished; the caller calls Finish after releasing mu_.
  std::optional<grpc::Status> MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // OnWriteDone and the pump come back here.
    if (finished_ || writing_ || pumping_) return std::nullopt;
    if (broken_) {
      finished_ = true;
      return grpc::Status(grpc::StatusCode::CANCELLED, "the pipeline stream was cancelled");
    }
    if (reads_done_ && in_flight_ == 0 && unstarted_.empty() && to_write_.empty()) {
      finished_ = true;
      return grpc::Status::OK;
    }
    return std::nullopt;
  }

  void HoldLocked(size_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    held_bytes_ += bytes;
    AddHeld(static_cast<ptrdiff_t>(bytes));
  }
  void ReleaseLocked(size_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    held_bytes_ -= bytes;
    AddHeld(-static_cast<ptrdiff_t>(bytes));
  }
  void AddHeld(ptrdiff_t delta) {
    if (counters_ == nullptr || delta == 0) return;
    const size_t now = counters_->held_bytes.fetch_add(delta) + delta;
    size_t peak = counters_->peak_held_bytes.load();
    while (now > peak && !counters_->peak_held_bytes.compare_exchange_weak(peak, now)) {
    }
  }

  PipelineBackend* const backend_;
  const PipelineBackend::Deadline deadline_;
  const size_t max_in_flight_;
  const size_t max_held_bytes_;
  PipelineCounters* const counters_;
  // Answers per message at most, and about this many bytes (one bigger answer
  // goes alone): well under gRPC's default 4 MiB receive limit of clients.
  static constexpr size_t kMaxMessageBytes = 1 << 20;
  static constexpr int kMaxAnswersPerMessage = 1024;

  v1::PipelineRequests incoming_;  // Target of the one outstanding read.

  absl::Mutex mu_;
  bool pumping_ ABSL_GUARDED_BY(mu_) = false;
  // Requests read, not started yet (the pump starts them in order).
  std::deque<std::unique_ptr<Op>> unstarted_ ABSL_GUARDED_BY(mu_);
  size_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;  // Started, not yet answered.
  bool reading_ ABSL_GUARDED_BY(mu_) = false;  // A StartRead is outstanding.
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  // Messages of answers to send; the front one is being written while
  // writing_, and answers join the back one (not the front).
  std::deque<Outgoing> to_write_ ABSL_GUARDED_BY(mu_);
  size_t held_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // Of to_write_.
  bool paused_for_bytes_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::ServerBidiReactor<v1::PipelineRequests, v1::PipelineResponses>* ServePipeline(
    grpc::CallbackServerContext* context, const grpc::Status& admitted, PipelineBackend* backend,
    size_t max_in_flight, size_t max_held_bytes, PipelineCounters* counters) {
  return new PipelineReactor(context, admitted, backend, max_in_flight, max_held_bytes, counters);
}

}  // namespace kvstore
