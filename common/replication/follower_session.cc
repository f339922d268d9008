#include "common/replication/follower_session.h"

#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/replication/snapshot_receiver.h"
#include "common/storage/storage_failpoints.h"
#include "glog/logging.h"

namespace kvstore {
namespace {

constexpr char kIncomingSnapshot[] = "snapshot-incoming.tmp";

// Durable progress reported by store callbacks (which may run after the
// stream ended, hence shared) and sent as acks by the stream's ack thread.
struct AckState {
  absl::Mutex mu;
  uint64_t durable ABSL_GUARDED_BY(mu) = 0;
  uint64_t changes ABSL_GUARDED_BY(mu) = 0;
  absl::Status error ABSL_GUARDED_BY(mu);
  bool done ABSL_GUARDED_BY(mu) = false;
};

}  // namespace

absl::Status RunFollowerSession(ReplicationNode* node_, FollowerStream* stream) {
  Store* const store = node_->store();
  v1::LeaderMessage message;
  if (!stream->Read(&message)) return absl::OkStatus();
  if (!message.has_hello()) {
    return absl::InvalidArgumentError("a replication stream starts with Hello");
  }
  const v1::Hello hello = message.hello();
  uint64_t generation = 0;
  absl::ReleasableMutexLock accepting(&node_->stream_mu());
  std::string reason;
  if (absl::Status s = node_->AcceptLeader(hello, &generation, &reason); !s.ok()) {
    accepting.Release();
    LOG(WARNING) << "Refusing leader " << hello.leader() << " (epoch " << hello.epoch()
                 << "): " << s.message();
    v1::FollowerMessage reply;
    reply.mutable_refused()->set_epoch(node_->promised_epoch());
    reply.mutable_refused()->set_leader(node_->leader());
    reply.mutable_refused()->set_message(std::string(s.message()));
    reply.mutable_refused()->set_reason(reason);
    stream->Write(reply);
    return absl::OkStatus();
  }
  v1::FollowerMessage position;
  *position.mutable_position() = LogPosition(store, node_->promised_epoch());
  const uint64_t durable_at_start = position.position().durable_index();
  const uint64_t held = position.position().last_index();
  accepting.Release();
  // Readiness waits for the leader's first Entries or Heartbeat: only then is
  // it known that no snapshot comes first (this log may have diverged).
  if (!stream->Write(position)) return absl::OkStatus();

  auto acks = std::make_shared<AckState>();
  {
    absl::MutexLock l(&acks->mu);
    acks->durable = durable_at_start;
  }
  // What an earlier stream delivered and this log had not made durable when the
  // position was stated is acked on this stream once it is (the leader counts
  // only what the position said was durable).
  if (durable_at_start < held) {
    store->WhenDurable(held, [acks, held](const absl::Status& s) {
      if (!s.ok()) return;
      absl::MutexLock l(&acks->mu);
      if (held > acks->durable) {
        acks->durable = held;
        ++acks->changes;
      }
    });
  }
  std::thread acker([&] {
    uint64_t seen = 0;
    for (;;) {
      uint64_t durable = 0;
      {
        absl::MutexLock l(&acks->mu);
        const auto moved = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(acks->mu) {
          return acks->changes != seen || acks->done;
        };
        acks->mu.Await(absl::Condition(&moved));
        if (acks->done) return;
        seen = acks->changes;
        durable = acks->durable;
      }
      // An ack belongs to this stream: once a newer leader's stream replaced
      // it (this node may then truncate or replace its log), it says nothing.
      if (!node_->IsCurrentStream(generation)) return;
      v1::FollowerMessage ack;
      KV_FAILPOINT_CRASH(storage_failpoints::kFollowerBeforeAck);
      ack.mutable_ack()->set_durable_index(durable);
      ack.mutable_ack()->set_applied_index(store->last_index());
      if (!stream->Write(ack)) return;
    }
  });

  SnapshotReceiver incoming(store->fs(), JoinPath(store->dir(), kIncomingSnapshot));
  absl::Status failed;
  while (failed.ok() && stream->Read(&message)) {
    // Checked and applied under stream_mu so that a stream replaced meanwhile
    // applies nothing more (see ReplicationNode::stream_mu).
    absl::MutexLock applying(&node_->stream_mu());
    if (!node_->IsCurrentStream(generation)) {
      failed = absl::AbortedError("a newer leader stream replaced this one");
      break;
    }
    {
      absl::MutexLock l(&acks->mu);
      if (!acks->error.ok()) {
        failed = acks->error;
        break;
      }
    }
    switch (message.body_case()) {
      case v1::LeaderMessage::kEntries: {
        const v1::Entries& entries = message.entries();
        node_->NoteLeaderIndex(entries.leader_last_index());
        const uint64_t last = entries.last_index();
        ReplicationNode* node = node_;
        store->AppendReplicated(entries.records(), [acks, last, node](const absl::Status& s) {
          if (absl::IsFailedPrecondition(s)) node->MarkDiverged(std::string(s.message()));
          absl::MutexLock l(&acks->mu);
          if (!s.ok()) {
            if (acks->error.ok()) acks->error = s;
            return;
          }
          KV_FAILPOINT_CRASH(storage_failpoints::kFollowerAfterApply);
          acks->durable = std::max(acks->durable, last);
          ++acks->changes;
        });
        break;
      }
      case v1::LeaderMessage::kHeartbeat:
        node_->NoteLeaderIndex(message.heartbeat().leader_last_index());
        break;
      case v1::LeaderMessage::kSnapshotBegin: {
        const v1::SnapshotBegin& begin = message.snapshot_begin();
        LOG(INFO) << "Receiving a snapshot from " << hello.leader() << ": " << begin.bytes()
                  << " bytes, indexes " << begin.start_index() << ".." << begin.end_index();
        failed = incoming.Begin(begin);
        break;
      }
      case v1::LeaderMessage::kSnapshotChunk:
        failed = incoming.Chunk(message.snapshot_chunk());
        break;
      case v1::LeaderMessage::kSnapshotEnd: {
        failed = incoming.End();
        if (!failed.ok()) break;
        KV_FAILPOINT_CRASH(storage_failpoints::kInstallAfterReceive);
        absl::StatusOr<SnapshotMeta> meta = store->InstallSnapshot(incoming.path());
        if (!meta.ok()) {
          failed = meta.status();
          break;
        }
        absl::MutexLock l(&acks->mu);
        acks->durable = meta->start_index;
        ++acks->changes;
        break;
      }
      default:
        failed = absl::InvalidArgumentError("unexpected message on a replication stream");
        break;
    }
  }
  {
    absl::MutexLock l(&acks->mu);
    acks->done = true;
  }
  stream->Cancel();  // Unblocks a Write in the ack thread.
  acker.join();
  if (!failed.ok() && !absl::IsAborted(failed)) {
    LOG(WARNING) << "Replication stream from " << hello.leader() << " ended: " << failed;
  }
  return failed;
}

}  // namespace kvstore
