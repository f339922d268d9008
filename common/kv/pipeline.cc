#include "common/kv/pipeline.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace kvstore {
namespace {

// gRPC is only called with mu_ released: a reaction may run on the calling
// thread. The reactor deletes itself once gRPC is done with the stream
// (OnDone) and every request it started has come back.
class PipelineReactor final
    : public grpc::ServerBidiReactor<v1::PipelineRequests, v1::PipelineResponses> {
 public:
  PipelineReactor(grpc::CallbackServerContext* context, const grpc::Status& admitted,
                  PipelineBackend* backend, size_t max_in_flight)
      : backend_(backend),
        deadline_(context->deadline()),
        max_in_flight_(std::max<size_t>(1, max_in_flight)) {
    if (!admitted.ok()) {
      finished_ = true;
      reads_done_ = true;
      Finish(admitted);
      return;
    }
    StartRead(&incoming_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // The client half-closed, or the stream broke.
      std::optional<grpc::Status> finish;
      {
        absl::MutexLock lock(&mu_);
        reads_done_ = true;
        finish = MaybeFinishLocked();
      }
      if (finish) Finish(*finish);
      return;
    }
    // Every request of the message is started; the message is reused.
    const int n = incoming_.requests_size();
    std::vector<Op*> ops(n);
    for (int i = 0; i < n; ++i) {
      ops[i] = new Op;
      ops[i]->request.Swap(incoming_.mutable_requests(i));
    }
    incoming_.Clear();
    bool read_more = false;
    {
      absl::MutexLock lock(&mu_);
      in_flight_ += n;
      read_more = !finished_ && in_flight_ < max_in_flight_;
      read_paused_ = !read_more;
      if (read_more) ++starting_reads_;
    }
    if (read_more) ReadNext();
    for (Op* op : ops) Dispatch(op);
  }

  void OnWriteDone(bool ok) override {
    const v1::PipelineResponses* next = nullptr;
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      to_write_.pop_front();
      if (!ok) {  // The client is gone: nothing more can be sent.
        broken_ = true;
        to_write_.clear();
      }
      // The answers that came while the last message was written go together.
      writing_ = !to_write_.empty();
      if (writing_) {
        next = &to_write_.front();
      } else {
        finish = MaybeFinishLocked();
      }
    }
    if (next != nullptr) StartWrite(next);
    if (finish) Finish(*finish);
  }

  void OnCancel() override {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      broken_ = true;
      finish = MaybeFinishLocked();
    }
    if (finish) Finish(*finish);
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
    }
    const v1::PipelineResponses* write = nullptr;
    bool resume_reading = false;
    std::optional<grpc::Status> finish;
    bool last = false;
    {
      absl::MutexLock lock(&mu_);
      --in_flight_;
      if (!broken_ && !finished_) {
        // Joins the last message not being written yet, unless that one is
        // full; the message being written (the front) is never touched.
        const size_t bytes = owned->response.ByteSizeLong();
        if (to_write_.size() < 2 || back_bytes_ + bytes > kMaxMessageBytes ||
            to_write_.back().responses_size() >= kMaxAnswersPerMessage) {
          to_write_.emplace_back();
          back_bytes_ = 0;
        }
        *to_write_.back().add_responses() = std::move(owned->response);
        back_bytes_ += bytes;
        if (!writing_) {
          writing_ = true;
          write = &to_write_.front();
        }
      }
      if (read_paused_ && !reads_done_ && !broken_ && !finished_ && in_flight_ < max_in_flight_) {
        read_paused_ = false;
        resume_reading = true;
        ++starting_reads_;
      }
      finish = MaybeFinishLocked();
      last = done_ && in_flight_ == 0;
    }
    // The write cannot race Finish (writing_ holds it off) nor so OnDone.
    if (write != nullptr) StartWrite(write);
    if (resume_reading) ReadNext();
    if (finish) Finish(*finish);
    if (last) delete this;
  }

  // StartRead, by a thread that counted itself in starting_reads_: until it
  // is done, the stream is not finished (so not deleted under it, and never
  // read after Finish). Finishes it if that waited for this.
  void ReadNext() {
    StartRead(&incoming_);
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      --starting_reads_;
      finish = MaybeFinishLocked();
    }
    if (finish) Finish(*finish);
  }

  // The status to finish with once nothing more will be sent: the client has
  // half-closed and every answer is out, or the stream broke. Marks the
  // stream finished; the caller calls Finish after releasing mu_.
  std::optional<grpc::Status> MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // OnWriteDone and ReadNext come back here.
    if (finished_ || writing_ || starting_reads_ > 0) return std::nullopt;
    if (broken_) {
      finished_ = true;
      return grpc::Status(grpc::StatusCode::CANCELLED, "the pipeline stream was cancelled");
    }
    if (reads_done_ && in_flight_ == 0 && to_write_.empty()) {
      finished_ = true;
      return grpc::Status::OK;
    }
    return std::nullopt;
  }

  PipelineBackend* const backend_;
  const PipelineBackend::Deadline deadline_;
  const size_t max_in_flight_;
  // Answers per message at most, and about this many bytes (one bigger answer
  // goes alone): well under gRPC's default 4 MiB receive limit of clients.
  static constexpr size_t kMaxMessageBytes = 1 << 20;
  static constexpr int kMaxAnswersPerMessage = 1024;

  v1::PipelineRequests incoming_;  // Target of the one outstanding read.

  absl::Mutex mu_;
  size_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;  // Started, not yet answered.
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  int starting_reads_ ABSL_GUARDED_BY(mu_) = 0;  // Threads about to StartRead (ReadNext).

  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  // Messages of answers to send; the front one is being written while
  // writing_, and answers join the back one (not the front).
  std::deque<v1::PipelineResponses> to_write_ ABSL_GUARDED_BY(mu_);
  size_t back_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // Of to_write_.back().
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::ServerBidiReactor<v1::PipelineRequests, v1::PipelineResponses>* ServePipeline(
    grpc::CallbackServerContext* context, const grpc::Status& admitted, PipelineBackend* backend,
    size_t max_in_flight) {
  return new PipelineReactor(context, admitted, backend, max_in_flight);
}

}  // namespace kvstore
