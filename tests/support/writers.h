// Test helpers shared by the integration tests: many writes in flight through
// the callback API, with what happened to each (the oracle's input).
#ifndef KVSTORE_TESTS_SUPPORT_WRITERS_H_
#define KVSTORE_TESTS_SUPPORT_WRITERS_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "kvstore/v1/kv.grpc.pb.h"

namespace kvstore {
namespace testing {

namespace v1 = ::kvstore::v1;

// "code N: message", for failure messages.
std::string Describe(const grpc::Status& s);

// A value that names its key and write, padded to about 100 bytes.
std::string MakeValue(const std::string& key, uint64_t tag);

// The seed of a randomized test (TestSeed()), printed and recorded so that a
// failure can be rerun with KV_TEST_SEED.
uint64_t Seed(const char* test);

struct WriteOp {
  enum class Kind { kSet, kDelete };
  Kind kind = Kind::kSet;
  std::string key;
  std::string value;
};

// The oracle's view of one write: pending from send to answer.
struct WriteResult {
  enum class State { kNotSent, kPending, kAcked, kFailed };
  State state = State::kNotSent;
  uint64_t version = 0;
  bool deleted = false;  // For deletes.
  grpc::Status status;
};

// Sends writes through the callback API with at most `window` in flight and
// at most one per key, so the writes to one key land in the order given.
// After the first failed write it stops sending (the server is presumably
// gone), and Run returns once every sent write has its answer.
class PipelinedWriter {
 public:
  PipelinedWriter(v1::KeyValue::Stub* stub, int window, v1::WriteAck ack = v1::WriteAck())
      : stub_(stub), window_(window), ack_(std::move(ack)) {}

  std::vector<WriteResult> Run(const std::vector<WriteOp>& ops) {
    std::unique_lock<std::mutex> lock(mu_);
    results_.assign(ops.size(), WriteResult());
    ops_ = &ops;
    for (size_t i = 0; i < ops.size(); ++i) {
      cv_.wait(lock, [&] {
        return (in_flight_ < window_ && busy_keys_.count(ops[i].key) == 0) || stop_;
      });
      if (stop_) break;
      ++in_flight_;
      busy_keys_.insert(ops[i].key);
      results_[i].state = WriteResult::State::kPending;
      lock.unlock();
      Send(i, ops[i]);
      lock.lock();
    }
    cv_.wait(lock, [&] { return in_flight_ == 0; });
    return std::move(results_);
  }

  int64_t acked() const { return acked_.load(); }
  int in_flight() {
    std::lock_guard<std::mutex> l(mu_);
    return in_flight_;
  }

 private:
  struct Call {
    grpc::ClientContext context;
    v1::SetRequest set;
    v1::SetResponse set_response;
    v1::DeleteRequest del;
    v1::DeleteResponse del_response;
  };

  void Send(size_t i, const WriteOp& op) {
    auto call = std::make_shared<Call>();
    call->context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    if (op.kind == WriteOp::Kind::kSet) {
      call->set.set_key(op.key);
      call->set.set_value(op.value);
      *call->set.mutable_ack() = ack_;
      stub_->async()->Set(
          &call->context, &call->set, &call->set_response,
          [this, i, call](grpc::Status s) { Done(i, s, call->set_response.version(), false); });
    } else {
      call->del.set_key(op.key);
      *call->del.mutable_ack() = ack_;
      stub_->async()->Delete(
          &call->context, &call->del, &call->del_response, [this, i, call](grpc::Status s) {
            Done(i, s, call->del_response.version(), call->del_response.deleted());
          });
    }
  }

  void Done(size_t i, const grpc::Status& s, uint64_t version, bool deleted) {
    std::lock_guard<std::mutex> l(mu_);
    WriteResult& r = results_[i];
    r.status = s;
    if (s.ok()) {
      r.state = WriteResult::State::kAcked;
      r.version = version;
      r.deleted = deleted;
      acked_.fetch_add(1);
    } else {
      r.state = WriteResult::State::kFailed;
      stop_ = true;
    }
    --in_flight_;
    busy_keys_.erase((*ops_)[i].key);
    cv_.notify_all();
  }

  v1::KeyValue::Stub* const stub_;
  const int window_;
  const v1::WriteAck ack_;
  std::mutex mu_;
  std::condition_variable cv_;
  int in_flight_ = 0;
  bool stop_ = false;
  const std::vector<WriteOp>* ops_ = nullptr;
  std::set<std::string> busy_keys_;  // Keys with a write in flight.
  std::vector<WriteResult> results_;
  std::atomic<int64_t> acked_{0};
};

}  // namespace testing
}  // namespace kvstore

#endif  // KVSTORE_TESTS_SUPPORT_WRITERS_H_
