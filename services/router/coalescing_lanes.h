// The router's coalescing engine: per node and kind of request, a lane that
// lets a few forwarded calls out at a time and sends the requests that wait
// meanwhile together, as one MultiGet or MultiSet.
//
// Each forwarded unary call costs the router and the shard a whole gRPC call.
// Under load, single Gets (and Sets) bound for the same node therefore travel
// together: a lane (one per node, request kind and read mode or ack) lets up to
// `coalesce_in_flight` calls run; requests that arrive while all of them are
// out wait in the lane and leave together, as one MultiGet (MultiSet), as soon
// as one of the lane's calls returns. No timer: at low load every request goes
// out alone, at once, exactly as before; the busier the node, the larger the
// batches. A waiting request adds at most one round trip to its latency.
//
// What a coalesced request keeps: its own result, version and error (per-key
// errors of the batch become its status), the retry rules of its kind (a batch
// that a node refuses naming the leader goes there once; a batch of replica
// reads that meets UNAVAILABLE tries the next node), its deadline (a request
// whose deadline passes while it waits is answered DEADLINE_EXCEEDED without
// being sent; the batch carries the latest deadline of its requests). What it
// loses: a caller's cancellation no longer cancels the forwarded batch (it
// still ends by its deadline).
//
// Size: a request that would fit alone never fails because of the others in
// its batch. A batch's request is kept to half the message limit (keys, and
// values for writes), and so is its expected answer: each read is expected to
// answer as much as the largest value the lane's last answers held (the
// estimate halves with each answer that holds less). The estimate can be
// wrong, so a batch of reads that fails with RESOURCE_EXHAUSTED (over the
// router's message limit, or over the shard's --max-response-bytes) is split
// in halves, each sent again (reads only: a write batch is never sent twice),
// down to requests alone, whose failure is then their own.
//
// Thread-safe. Lanes are created on first use and kept for the object's life
// (a handful per node); it must outlive every request submitted to it.
#ifndef KVSTORE_SERVICES_ROUTER_COALESCING_LANES_H_
#define KVSTORE_SERVICES_ROUTER_COALESCING_LANES_H_

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "kvstore/v1/kv.pb.h"
#include "services/router/routing_table.h"
#include "services/router/shard_call.h"

namespace kvstore {

// What a lane lets out at once.
struct LaneLimits {
  int max_in_flight;         // Calls out before requests wait.
  size_t max_items;          // Keys in one batch.
  size_t max_request_bytes;  // Of a batch's request (Kind::Bytes).
  size_t max_answer_bytes;   // Expected of a batch's answer.
};

// A request handed to a lane: where it goes, by when, and whom to tell.
template <typename Request, typename Response>
struct LaneRequest {
  std::shared_ptr<RoutingTable> table;
  int shard;
  std::vector<std::string> nodes;  // nodes[0] is the lane's node.
  grpc::CallbackServerContext* parent;
  std::chrono::system_clock::time_point deadline;
  const Request* request;  // Both must live until `done` runs.
  Response* response;
  // The request's status and a label naming the shard and the node that
  // answered last (ShardDone); the caller makes its final status of them.
  ShardDone done;
};

class CoalescingLanes {
 public:
  CoalescingLanes(const Backends& backends, const LaneLimits& limits);
  ~CoalescingLanes();
  CoalescingLanes(const CoalescingLanes&) = delete;
  CoalescingLanes& operator=(const CoalescingLanes&) = delete;

  // Each goes to the lane of its node (request.nodes[0]), kind and read mode
  // or ack; `done` may run before these return, on any thread.
  void SubmitGet(v1::ReadMode mode, LaneRequest<v1::GetRequest, v1::GetResponse> request);
  void SubmitSet(const v1::WriteAck& ack, LaneRequest<v1::SetRequest, v1::SetResponse> request);
  // A shard's slice of a client's MultiGet (MultiSet).
  void SubmitMultiGet(v1::ReadMode mode,
                      LaneRequest<v1::MultiGetRequest, v1::MultiGetResponse> request);
  void SubmitMultiSet(const v1::WriteAck& ack,
                      LaneRequest<v1::MultiSetRequest, v1::MultiSetResponse> request);

  // Requests waiting in the lanes for a call to their node to return.
  size_t queued() const;

 private:
  class Impl;
  const std::unique_ptr<Impl> impl_;
};

}  // namespace kvstore

#endif  // KVSTORE_SERVICES_ROUTER_COALESCING_LANES_H_
