// KeyValue/Pipeline, the streamed form of the public API, for any server
// that can answer each kind of request asynchronously (kv-router forwards
// them, kv-shard and kv-replica serve them from their store).
//
// One reactor per stream reads one message at a time and starts each of its
// requests on the backend; each is answered when done, from whatever thread
// finishes it, so answers go out in completion order, each with its
// request's id. There is one write at a time: the answers that arrive while a
// message is being written go together in the next one, so the busier the
// stream, the fewer messages per answer (no timer). Reading pauses while
// `max_in_flight` requests are unanswered, so a client that sends faster than
// they are answered is held back by gRPC's flow control, not by memory. A
// request's failure is its answer's status; the stream ends with OK once the
// client has half-closed and every answer is out, or CANCELLED if it breaks
// (the requests already started still run to completion, unanswered).
#ifndef KVSTORE_COMMON_KV_PIPELINE_H_
#define KVSTORE_COMMON_KV_PIPELINE_H_

#include <chrono>
#include <cstddef>
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

// The reactor for one Pipeline call (return it from the service's Pipeline).
// When `admitted` is not OK the stream ends at once with it (e.g. the
// caller's token was refused). `backend` must outlive every stream.
grpc::ServerBidiReactor<v1::PipelineRequests, v1::PipelineResponses>* ServePipeline(
    grpc::CallbackServerContext* context, const grpc::Status& admitted, PipelineBackend* backend,
    size_t max_in_flight = kDefaultPipelineMaxInFlight);

}  // namespace kvstore

#endif  // KVSTORE_COMMON_KV_PIPELINE_H_
