// How replication reaches other nodes, as the replication library sees it:
// streams of replication.proto messages and a position query, with no gRPC
// type in sight. services/replication/grpc_transport.h carries them over gRPC;
// tests use an in-process transport (tests/support/in_process_transport.h)
// that can cut and hold streams.
//
// Protocol on one stream (docs/replication.md): the leader writes Hello, the
// follower answers Position or Refused, then the leader writes Entries,
// Heartbeats and snapshots while the follower writes Acks.
#ifndef KVSTORE_COMMON_REPLICATION_TRANSPORT_H_
#define KVSTORE_COMMON_REPLICATION_TRANSPORT_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kvstore/v1/replication.pb.h"

namespace kvstore {

// One stream, leader side. Read and Write may run on two threads at once (one
// each); Cancel on any thread, any time.
class LeaderStream {
 public:
  virtual ~LeaderStream() = default;
  // Blocking. False once the stream is broken, closed or cancelled.
  virtual bool Write(const v1::LeaderMessage& message) = 0;
  virtual bool Read(v1::FollowerMessage* message) = 0;
  // Makes pending and later Read and Write return false.
  virtual void Cancel() = 0;
  // Why the stream ended; call once no Read or Write is running. Idempotent.
  virtual absl::Status Finish() = 0;
};

// One stream, follower side. Same threading rules.
class FollowerStream {
 public:
  virtual ~FollowerStream() = default;
  virtual bool Read(v1::LeaderMessage* message) = 0;
  virtual bool Write(const v1::FollowerMessage& message) = 0;
  virtual void Cancel() = 0;
};

// Thread-safe.
class ReplicationTransport {
 public:
  virtual ~ReplicationTransport() = default;
  // Opens a stream to the follower at `address`. Never null: a follower that
  // cannot be reached gives a stream whose first Write or Read fails.
  virtual std::unique_ptr<LeaderStream> Connect(const std::string& address) = 0;
  // The log position of the node at `address` (last_index, last_epoch, epoch,
  // durable_index), within `timeout`: what Promote compares with its own.
  virtual absl::StatusOr<v1::Position> AskPosition(const std::string& address,
                                                   absl::Duration timeout) = 0;
  // Asks the node at `address` to promise `request.epoch` to the candidate
  // (replication.proto, Replication.Promise) and returns its position once it
  // has; its refusal (FAILED_PRECONDITION) or an unreachable node otherwise.
  virtual absl::StatusOr<v1::Position> Promise(const std::string& address,
                                               const v1::PromiseRequest& request,
                                               absl::Duration timeout) = 0;
};

}  // namespace kvstore

#endif  // KVSTORE_COMMON_REPLICATION_TRANSPORT_H_
