// WatchStream: one etcd watch of a key prefix on its own stream, from a given
// revision, with progress notifications and previous values. The building
// block of TopologyView; it neither re-reads nor reconnects (its owner does).
//
// Next() blocks for the next batch:
//   - events in revision order, revision = the last event's revision;
//   - a progress notification (no events): etcd has sent everything up to
//     `revision`;
//   - compact_revision > 0: the history from start_revision on is partly
//     compacted away; the watch is over and the owner must read afresh;
// or returns an error when the stream ends (UNAVAILABLE and the like), when
// etcd cancels the watch for another reason (FAILED_PRECONDITION with etcd's
// reason), or after Cancel() (CANCELLED).
//
// Threads: one thread calls Next(); Cancel() may be called from any thread.
#ifndef KVSTORE_COMMON_COORD_WATCHER_H_
#define KVSTORE_COMMON_COORD_WATCHER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/coord/etcd_client.h"
#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "etcd/mvccpb/kv.pb.h"
#include "grpcpp/client_context.h"

namespace kvstore::coord {

struct WatchBatch {
  int64_t revision = 0;
  std::vector<mvccpb::Event> events;
  int64_t compact_revision = 0;
  bool progress() const { return events.empty() && compact_revision == 0; }
};

class WatchStream {
 public:
  // Opens the stream on the client's current endpoint and asks for a watch of
  // every key under `prefix` from `start_revision` (inclusive). The creation
  // is confirmed by the first Next().
  static absl::StatusOr<std::unique_ptr<WatchStream>> Open(EtcdClient* client,
                                                           const std::string& prefix,
                                                           int64_t start_revision);
  ~WatchStream();
  WatchStream(const WatchStream&) = delete;
  WatchStream& operator=(const WatchStream&) = delete;

  absl::StatusOr<WatchBatch> Next();
  // Makes a blocked or later Next() return CANCELLED.
  void Cancel();

 private:
  WatchStream(EtcdClient* client, std::shared_ptr<grpc::Channel> channel);
  // Ends the call and returns why it ended.
  absl::Status Finish();

  EtcdClient* const client_;
  const std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<etcdserverpb::Watch::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<etcdserverpb::WatchRequest, etcdserverpb::WatchResponse>>
      rw_;
  bool finished_ = false;  // Only the Next() thread touches it.
};

}  // namespace kvstore::coord

#endif  // KVSTORE_COMMON_COORD_WATCHER_H_
