// The leader's side of replication to one follower: a thread that keeps one
// Replication.Stream open (reconnecting with backoff), brings the follower to
// the leader's position (log entries it lacks, or a snapshot when the log no
// longer has them or the follower diverged), then streams new entries as the
// log grows, within a window of unacknowledged bytes.
#ifndef KVSTORE_COMMON_REPLICATION_FOLLOWER_LINK_H_
#define KVSTORE_COMMON_REPLICATION_FOLLOWER_LINK_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/replication/transport.h"
#include "kvstore/v1/admin.pb.h"
#include "kvstore/v1/replication.pb.h"

namespace kvstore {

class ReplicationNode;

class FollowerLink {
 public:
  // Starts the thread. `node` (and its transport) must outlive the link.
  // `epoch` is sent in Hello.
  // `needed` is the index the follower was known to need (0: unknown), kept
  // by log retention until this link learns it anew.
  FollowerLink(ReplicationNode* node, std::string address, uint64_t epoch, uint64_t needed = 0);
  // Stops and joins.
  ~FollowerLink();
  FollowerLink(const FollowerLink&) = delete;
  FollowerLink& operator=(const FollowerLink&) = delete;

  // Cancels the stream; the thread exits soon after. Idempotent.
  void Stop();

  const std::string& address() const { return address_; }
  // Highest index the follower confirmed durable in the current stream (0 before).
  uint64_t acked_index() const { return acked_.load(std::memory_order_acquire); }
  // Lowest index the follower still needs from the log while connected (0 when
  // not connected): the leader's log retention keeps it.
  uint64_t needed_index() const { return needed_.load(std::memory_order_acquire); }
  void FillStatus(v1::FollowerStatus* status) const;

 private:
  enum class Outcome { kRetry, kDeposed, kStopped };
  void Run();
  // One connection, from Hello until it breaks. Sets *error on failure.
  Outcome Session(std::string* error);
  // Sends the newest snapshot; *next becomes its start_index + 1.
  bool SendSnapshot(LeaderStream* stream, uint64_t* next, std::string* error);
  void SetState(const char* state);
  bool stopping() const;

  ReplicationNode* const node_;
  const std::string address_;
  const uint64_t epoch_;

  std::atomic<uint64_t> acked_{0};
  std::atomic<uint64_t> needed_{0};

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  LeaderStream* stream_ ABSL_GUARDED_BY(mu_) = nullptr;  // The current one, for Stop.
  const char* state_ ABSL_GUARDED_BY(mu_) = "connecting";
  std::string error_ ABSL_GUARDED_BY(mu_);
  uint64_t snapshots_sent_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t caught_up_at_micros_ ABSL_GUARDED_BY(mu_) = 0;  // Node's clock.
  uint64_t ack_count_ ABSL_GUARDED_BY(mu_) = 0;           // Wakes the sender when acks arrive.

  std::thread thread_;
};

}  // namespace kvstore

#endif  // KVSTORE_COMMON_REPLICATION_FOLLOWER_LINK_H_
