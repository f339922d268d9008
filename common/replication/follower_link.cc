#include "common/replication/follower_link.h"

#include <xxhash.h>

#include <algorithm>
#include <deque>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/replication/node.h"
#include "common/storage/log_cursor.h"
#include "glog/logging.h"

namespace kvstore {
namespace {

constexpr size_t kSnapshotChunkBytes = 1 << 20;

}  // namespace

FollowerLink::FollowerLink(ReplicationNode* node, std::string address, uint64_t epoch,
                           uint64_t needed)
    : node_(node), address_(std::move(address)), epoch_(epoch), needed_(needed) {
  {
    absl::MutexLock l(&mu_);
    caught_up_at_micros_ = node_->clock()->NowMicros();
  }
  thread_ = std::thread([this] { Run(); });
}

FollowerLink::~FollowerLink() {
  Stop();
  if (thread_.joinable()) thread_.join();
}

void FollowerLink::Stop() {
  absl::MutexLock l(&mu_);
  stopping_ = true;
  if (stream_ != nullptr) stream_->Cancel();
}

bool FollowerLink::stopping() const {
  absl::MutexLock l(&mu_);
  return stopping_;
}

void FollowerLink::SetState(const char* state) {
  absl::MutexLock l(&mu_);
  state_ = state;
}

void FollowerLink::FillStatus(v1::FollowerStatus* status) const {
  const uint64_t leader_last = node_->store()->last_index();
  const uint64_t acked = acked_index();
  absl::MutexLock l(&mu_);
  status->set_address(address_);
  status->set_state(state_);
  status->set_acked_index(acked);
  status->set_lag_entries(leader_last > acked ? leader_last - acked : 0);
  status->set_lag_seconds(
      leader_last > acked
          ? static_cast<double>(node_->clock()->NowMicros() - caught_up_at_micros_) / 1e6
          : 0.0);
  status->set_snapshots_sent(snapshots_sent_);
  status->set_error(error_);
}

void FollowerLink::Run() {
  const NodeOptions& options = node_->options();
  absl::Duration backoff = options.min_backoff;
  while (!stopping()) {
    std::string error;
    const int64_t started = node_->clock()->NowMicros();
    const Outcome outcome = Session(&error);
    needed_.store(0, std::memory_order_release);
    if (outcome != Outcome::kRetry) return;
    {
      absl::MutexLock l(&mu_);
      if (stopping_) return;
      state_ = "disconnected";
      if (!error.empty() && error != error_) {
        LOG(WARNING) << "Replication to " << address_ << ": " << error;
      }
      error_ = error;
    }
    // A session that ran a while resets the backoff.
    if (node_->clock()->NowMicros() - started > 5'000'000) backoff = options.min_backoff;
    absl::MutexLock l(&mu_);
    const auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
    mu_.AwaitWithTimeout(absl::Condition(&stop), backoff);
    backoff = std::min(backoff * 2, options.max_backoff);
  }
}

FollowerLink::Outcome FollowerLink::Session(std::string* error) {
  Store* const store = node_->store();
  const NodeOptions& options = node_->options();
  Clock* const clock = node_->clock();
  std::unique_ptr<LeaderStream> stream = node_->transport()->Connect(address_);
  {
    absl::MutexLock l(&mu_);
    if (stopping_) return Outcome::kStopped;
    stream_ = stream.get();
    state_ = "connecting";
  }
  // Clears stream_ before `stream` goes away, whatever the exit path.
  struct Unregister {
    FollowerLink* link;
    ~Unregister() {
      absl::MutexLock l(&link->mu_);
      link->stream_ = nullptr;
    }
  } unregister{this};

  auto finish = [&](const std::string& what) {
    stream->Cancel();
    const absl::Status s = stream->Finish();
    *error = s.ok() ? what : absl::StrCat(what, ": ", s.message());
    return stopping() ? Outcome::kStopped : Outcome::kRetry;
  };

  v1::LeaderMessage hello;
  v1::Hello* h = hello.mutable_hello();
  h->set_epoch(epoch_);
  h->set_leader(node_->advertise());
  h->set_leader_id(node_->node_id());
  h->set_leader_last_index(store->last_index());
  h->set_cluster(options.cluster);
  h->set_shard(options.shard);
  if (!stream->Write(hello)) return finish("cannot reach the follower");
  v1::FollowerMessage reply;
  if (!stream->Read(&reply)) return finish("the follower closed the stream");
  const auto give_up = [&](const std::string& why) {
    {
      absl::MutexLock l(&mu_);
      state_ = "refused";
      error_ = why;
    }
    stream->Cancel();
    (void)stream->Finish();  // Refused: why is already said.
  };
  if (reply.has_refused() || reply.position().epoch() > epoch_) {
    const uint64_t epoch = reply.has_refused() ? reply.refused().epoch() : reply.position().epoch();
    const std::string leader = reply.has_refused() ? reply.refused().leader() : "";
    const std::string reason = reply.has_refused() ? reply.refused().reason() : "stale_epoch";
    const std::string message = reply.has_refused() ? reply.refused().message() : "";
    LOG(WARNING) << "Follower " << address_ << " refuses epoch " << epoch_ << ": it knows epoch "
                 << epoch << (leader.empty() ? "" : absl::StrCat(" led by ", leader)) << " ("
                 << (message.empty() ? reason : message) << ")";
    if (reason == "stale_epoch" || (reason.empty() && epoch > epoch_)) {
      give_up(absl::StrCat("refused: the follower knows epoch ", epoch));
      node_->Depose(epoch, leader);
      return Outcome::kDeposed;
    }
    if (reason == "epoch_taken" || (reason.empty() && epoch == epoch_)) {
      const std::string why = absl::StrCat(
          "follower ", address_, " refuses this node's epoch ", epoch_, ": ",
          message.empty() ? absl::StrCat("it follows ", leader, " at that epoch") : message,
          ". Two leaders of one epoch: this node stops leading; promote one node with a higher "
          "epoch");
      give_up(why);
      node_->RefuseToLead(why);
      return Outcome::kDeposed;
    }
    // Another shard or cluster (a wrong --followers entry), or a follower
    // shutting down: nothing changes here; retried with backoff.
    return finish(absl::StrCat("refused: ", message.empty() ? reason : message));
  }

  const v1::Position& position = reply.position();
  if (!node_->OnHandshake(address_, position)) {
    give_up("this node refuses to lead (see its role and log)");
    return Outcome::kDeposed;
  }

  // Where to start: right after the follower's last entry if this log holds
  // that entry with the same epoch; otherwise the follower lacks entries this
  // log no longer has, or holds entries this leader never had: full resync.
  uint64_t next = position.last_index() + 1;
  bool partial = false;
  if (position.last_index() <= store->last_index()) {
    if (position.last_index() == 0) {
      partial = true;  // The cursor says NotFound if index 1 is gone.
    } else {
      absl::StatusOr<uint64_t> epoch =
          LogCursor::EpochAt(store->fs(), store->dir(), position.last_index());
      partial = epoch.ok() && *epoch == position.last_epoch();
    }
  }
  // What it holds counts as acknowledged only when it matches this log, and
  // only as far as it is durable there.
  acked_.store(partial ? std::min(position.durable_index(), position.last_index()) : 0,
               std::memory_order_release);
  {
    absl::MutexLock l(&mu_);
    error_.clear();
  }
  LOG(INFO) << "Replicating to " << address_ << ": it is at index " << position.last_index()
            << " (epoch " << position.last_epoch() << "), "
            << (partial ? "sending the log from there" : "sending a snapshot first");

  // Acks arrive on their own thread; the sender waits on ack_count_ when its
  // window is full.
  std::atomic<bool> reader_done{false};
  std::thread reader([&] {
    v1::FollowerMessage message;
    while (stream->Read(&message)) {
      if (!message.has_ack()) continue;
      acked_.store(message.ack().durable_index(), std::memory_order_release);
      // What it holds durably it no longer needs from this log.
      uint64_t needed = needed_.load(std::memory_order_acquire);
      while (needed != 0 && message.ack().durable_index() + 1 > needed &&
             !needed_.compare_exchange_weak(needed, message.ack().durable_index() + 1)) {
      }
      {
        absl::MutexLock l(&mu_);
        ++ack_count_;
        if (message.ack().durable_index() >= store->last_index()) {
          caught_up_at_micros_ = clock->NowMicros();
        }
      }
      node_->OnAck();
    }
    reader_done.store(true);
    absl::MutexLock l(&mu_);
    ++ack_count_;
  });
  auto stop_reader = [&] {
    stream->Cancel();
    reader.join();
  };

  LogCursor cursor(store->fs(), store->dir());
  if (!partial) {
    if (!SendSnapshot(stream.get(), &next, error)) {
      stop_reader();
      (void)stream->Finish();  // *error says why.
      return stopping() ? Outcome::kStopped : Outcome::kRetry;
    }
  }
  cursor.Seek(next);
  // Retention keeps what the follower does not hold durably yet: after a
  // reconnect it resumes from there, not from what was merely sent.
  needed_.store(partial ? acked_index() + 1 : next, std::memory_order_release);
  SetState("streaming");

  // (last index, bytes) of each message not yet acknowledged.
  std::deque<std::pair<uint64_t, size_t>> unacked;
  size_t unacked_bytes = 0;
  int64_t last_sent = clock->NowMicros();
  std::string records;
  Outcome outcome = Outcome::kRetry;
  for (;;) {
    if (stopping()) {
      outcome = Outcome::kStopped;
      break;
    }
    if (reader_done.load()) {
      *error = "the follower closed the stream";
      break;
    }
    const uint64_t acked = acked_index();
    while (!unacked.empty() && unacked.front().first <= acked) {
      unacked_bytes -= unacked.front().second;
      unacked.pop_front();
    }
    if (unacked_bytes >= options.max_unacked_bytes) {
      // Window full: wait for an ack (or a broken stream).
      absl::MutexLock l(&mu_);
      const uint64_t seen = ack_count_;
      const auto moved = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return ack_count_ != seen || stopping_;
      };
      mu_.AwaitWithTimeout(absl::Condition(&moved), absl::Milliseconds(100));
      continue;
    }
    const uint64_t written = store->written_index();
    records.clear();
    uint64_t first = 0;
    uint64_t last = 0;
    absl::Status s = cursor.Read(written, options.max_batch_bytes, &records, &first, &last);
    if (absl::IsNotFound(s)) {
      // The log moved past what this follower needs (retention limit): resync.
      LOG(WARNING) << "Follower " << address_ << " needs index " << cursor.next_index()
                   << ", no longer in the log: sending a snapshot";
      SetState("snapshotting");
      if (!SendSnapshot(stream.get(), &next, error)) break;
      cursor.Seek(next);
      needed_.store(next, std::memory_order_release);
      unacked.clear();
      unacked_bytes = 0;
      SetState("streaming");
      continue;
    }
    if (!s.ok()) {
      *error = absl::StrCat("reading the log: ", s.message());
      LOG(ERROR) << "Replication to " << address_ << " stopped: " << *error;
      break;
    }
    if (first > 0) {
      v1::LeaderMessage message;
      v1::Entries* entries = message.mutable_entries();
      entries->set_first_index(first);
      entries->set_last_index(last);
      entries->set_leader_last_index(written);
      entries->mutable_records()->swap(records);
      const size_t bytes = entries->records().size();
      if (!stream->Write(message)) {
        *error = "the follower closed the stream";
        break;
      }
      unacked.emplace_back(last, bytes);
      unacked_bytes += bytes;
      last_sent = clock->NowMicros();
      continue;
    }
    if (clock->NowMicros() - last_sent >= absl::ToInt64Microseconds(options.heartbeat)) {
      v1::LeaderMessage message;
      message.mutable_heartbeat()->set_leader_last_index(written);
      message.mutable_heartbeat()->set_leader_unix_ms(clock->NowUnixMillis());
      if (!stream->Write(message)) {
        *error = "the follower closed the stream";
        break;
      }
      last_sent = clock->NowMicros();
    }
    store->WaitForWritten(cursor.next_index() - 1, options.heartbeat);
  }
  stop_reader();
  const absl::Status finished = stream->Finish();
  if (error->empty() && !finished.ok()) *error = std::string(finished.message());
  return stopping() ? Outcome::kStopped : outcome;
}

bool FollowerLink::SendSnapshot(LeaderStream* stream, uint64_t* next, std::string* error) {
  Store* const store = node_->store();
  SetState("snapshotting");
  // The newest snapshot may be pruned between listing and opening: try twice.
  std::unique_ptr<SequentialFile> file;
  SnapshotMeta meta;
  uint64_t size = 0;
  for (int attempt = 0; attempt < 2 && file == nullptr; ++attempt) {
    absl::StatusOr<SnapshotMeta> newest = store->NewestSnapshot();
    if (!newest.ok()) {
      *error = absl::StrCat("no snapshot to send: ", newest.status().message());
      return false;
    }
    absl::StatusOr<std::unique_ptr<SequentialFile>> opened =
        store->fs()->OpenSequential(newest->path);
    absl::StatusOr<uint64_t> bytes = store->fs()->FileSize(newest->path);
    if (opened.ok() && bytes.ok()) {
      file = *std::move(opened);
      meta = *newest;
      size = *bytes;
    }
  }
  if (file == nullptr) {
    *error = "the newest snapshot disappeared while opening it";
    return false;
  }
  // While the snapshot travels, the log from its start on must stay.
  needed_.store(meta.start_index + 1, std::memory_order_release);
  const int64_t started = node_->clock()->NowMicros();
  v1::LeaderMessage begin;
  begin.mutable_snapshot_begin()->set_start_index(meta.start_index);
  begin.mutable_snapshot_begin()->set_end_index(meta.end_index);
  begin.mutable_snapshot_begin()->set_bytes(size);
  begin.mutable_snapshot_begin()->set_epoch(meta.epoch);
  if (!stream->Write(begin)) {
    *error = "the follower closed the stream";
    return false;
  }
  uint64_t offset = 0;
  std::string chunk;
  for (;;) {
    if (stopping()) return false;
    if (absl::Status s = file->Read(kSnapshotChunkBytes, &chunk); !s.ok()) {
      *error = absl::StrCat("reading ", meta.path, ": ", s.message());
      return false;
    }
    if (chunk.empty()) break;
    v1::LeaderMessage message;
    v1::SnapshotChunk* out = message.mutable_snapshot_chunk();
    out->set_offset(offset);
    out->set_checksum(XXH3_64bits(chunk.data(), chunk.size()));
    offset += chunk.size();
    out->mutable_data()->swap(chunk);
    if (!stream->Write(message)) {
      *error = "the follower closed the stream during the snapshot";
      return false;
    }
  }
  v1::LeaderMessage end;
  end.mutable_snapshot_end();
  if (!stream->Write(end)) {
    *error = "the follower closed the stream during the snapshot";
    return false;
  }
  LOG(INFO) << "Sent snapshot " << meta.path << " (" << offset << " bytes, indexes "
            << meta.start_index << ".." << meta.end_index << ") to " << address_ << " in "
            << static_cast<double>(node_->clock()->NowMicros() - started) / 1e6 << " s";
  *next = meta.start_index + 1;
  absl::MutexLock l(&mu_);
  ++snapshots_sent_;
  return true;
}

}  // namespace kvstore
