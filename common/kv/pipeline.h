// KeyValue/Pipeline, the streamed form of the public API, for any server
// that can answer each kind of request asynchronously (kv-router forwards
// them, kv-shard and kv-replica serve them from their store).
//
// One reactor per stream reads one message at a time and starts its
// requests on the backend, one by one; each is answered when done, from
// whatever thread finishes it, so answers go out in completion order, each
// with its request's id. There is one write at a time: the answers that
// arrive while a message is being written go together in the next one, so
// the busier the stream, the fewer messages per answer (no timer).
//
// Requests start, and further messages are read, only while fewer than
// `max_in_flight` requests are unanswered and the answers waiting to be
// written hold fewer than `max_held_bytes`; otherwise the stream waits for
// answers, or for writes to drain (the rest of a message already read waits
// too). So a client that sends faster than it is answered, or that does not
// read its answers, is held back by gRPC's flow control, not by memory: a
// stream holds at most about max_held_bytes of answers, plus one answer,
// plus those of the requests still running. A request's failure is its
// answer's status; the stream ends with OK once the client has half-closed
// and every answer is out, or CANCELLED if it breaks (the requests already
// started still run to completion, unanswered; those not started never
// start).
#ifndef KVSTORE_COMMON_KV_PIPELINE_H_
#define KVSTORE_COMMON_KV_PIPELINE_H_

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>

#include "grpcpp/grpcpp.h"
#include "kvstore/v1/kv.grpc.pb.h"

namespace kvstore {

// What a Pipeline stream runs its requests on. Each method starts one request
// of a stream whose deadline is `deadline` (time_point::max() when the client
// set none) and calls `done` exactly once, on any thread, possibly before
// returning, with the request's status; `response` is filled when it is OK.
// `request` and `response` stay valid until `done` is called.
class PipelineBackend {
 public:
  using Deadline = std::chrono::system_clock::time_point;
  using Done = std::function<void(const grpc::Status& status)>;
  virtual ~PipelineBackend() = default;
  virtual void PipelineGet(Deadline deadline, const v1::GetRequest* request,
                           v1::GetResponse* response, Done done) = 0;
  virtual void PipelineSet(Deadline deadline, const v1::SetRequest* request,
                           v1::SetResponse* response, Done done) = 0;
  virtual void PipelineDelete(Deadline deadline, const v1::DeleteRequest* request,
                              v1::DeleteResponse* response, Done done) = 0;
  virtual void PipelineMultiGet(Deadline deadline, const v1::MultiGetRequest* request,
                                v1::MultiGetResponse* response, Done done) = 0;
  virtual void PipelineMultiSet(Deadline deadline, const v1::MultiSetRequest* request,
                                v1::MultiSetResponse* response, Done done) = 0;
};

// Requests of one stream started and not yet answered, at most, by default.
inline constexpr size_t kDefaultPipelineMaxInFlight = 1024;
// Bytes of answers one stream holds waiting to be written before it starts
// no more requests, by default.
inline constexpr size_t kDefaultPipelineMaxHeldBytes = 64 << 20;

// What the streams that share it hold, for tests and metrics. Thread-safe.
struct PipelineCounters {
  std::atomic<size_t> held_bytes{0};       // Answers waiting to be written, now.
  std::atomic<size_t> peak_held_bytes{0};  // The most held_bytes has been.
  // Times a stream stopped starting requests because its answers held
  // max_held_bytes.
  std::atomic<uint64_t> reads_paused_for_bytes{0};
};

// The reactor for one Pipeline call (return it from the service's Pipeline).
// When `admitted` is not OK the stream ends at once with it (e.g. the
// caller's token was refused). `backend` must outlive every stream.
// `counters`, when not null, must outlive every stream.
grpc::ServerBidiReactor<v1::PipelineRequests, v1::PipelineResponses>* ServePipeline(
    grpc::CallbackServerContext* context, const grpc::Status& admitted, PipelineBackend* backend,
    size_t max_in_flight = kDefaultPipelineMaxInFlight,
    size_t max_held_bytes = kDefaultPipelineMaxHeldBytes, PipelineCounters* counters = nullptr);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_KV_PIPELINE_H_
