// The replication state of one kv-shard or kv-replica process: its role
// (leader, replica, deposed), its epoch, and on a leader one FollowerLink per
// follower pushing the log over a Replication.Stream.
//
// Leader: each link reads the leader's own log files (LogCursor) from the
// follower's next index and streams Entries; a follower whose position the log
// no longer holds, or whose last entry's epoch differs from the leader's at the
// same index (it diverged), gets the leader's newest snapshot and then the log
// from the snapshot's start. Acks move each follower's durable index, which
// sync writes wait on (AwaitReplicas). Unacked bytes per follower are bounded
// (flow control), so a slow follower slows only its own stream.
//
// Replica: accepts one leader stream at a time, from a leader whose epoch is at
// least the highest it has seen (kept durably in <data_dir>/EPOCH), applies
// and logs entries (Store::AppendReplicated), acks the durable index.
//
// Epochs: every start of leadership is a new epoch, recorded durably (EPOCH,
// then an epoch record in the log) before the first write, and one epoch has
// exactly one leader id. A leader that (re)starts first completes a handshake
// with every follower at the epoch it knew; if a follower's log is ahead of
// its own ((last epoch, last index) compared), it lost writes it may have
// acknowledged and refuses to lead. Only when every follower has answered does
// it start its new epoch and take writes (docs/replication.md).
//
// Fencing: a leader whose Hello is refused by a follower with a higher epoch is
// deposed: it stops its links and refuses writes naming the newer leader, and
// remembers the epoch so that a restart stays deposed. Refused at its own
// epoch by a follower of another leader (two promotions raced), it stops
// leading too. Every step-down fences the store before anything else, so no
// write admitted before it takes an index after it.
//
// Router epochs: a write whose router names an epoch newer than every epoch
// this node knows means a newer leader exists (CheckRouterEpoch). A leader
// fences itself at once: in static mode it steps down (deposed until a newer
// leader's Hello, a promote or a restart; the epoch is not recorded, since a
// confused router may have named it); in coordinated mode its guard fails
// (nothing more is admitted, acknowledged or published, as when a lease runs
// out) until the coordinator, told through the router-fence handler, either
// steps it down or finds it still holds its leadership and resumes it
// (ResumeAfterRouterFence).
#ifndef KVSTORE_COMMON_REPLICATION_NODE_H_
#define KVSTORE_COMMON_REPLICATION_NODE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/replication/epoch_file.h"
#include "common/replication/in_sync_set.h"
#include "common/replication/replication_hooks.h"
#include "common/replication/transport.h"
#include "common/storage/clock.h"
#include "common/storage/store.h"
#include "kvstore/v1/replication.pb.h"

namespace kvstore {

enum class Role { kLeader, kReplica, kDeposed };
const char* RoleName(Role role);

struct NodeOptions {
  // This node's client-facing address, named to followers and in errors.
  std::string advertise;
  // HOST:PORT of each follower a leader pushes to.
  std::vector<std::string> followers;
  // Followers a write waits for by default (0 = async acks).
  int sync_acks = 0;
  absl::Duration sync_timeout = absl::Seconds(5);
  // Largest Entries message, and unacked bytes in flight per follower.
  size_t max_batch_bytes = 1 << 20;
  size_t max_unacked_bytes = 16 << 20;
  // Reconnect backoff bounds.
  absl::Duration min_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(1);
  // Idle streams carry a heartbeat this often.
  absl::Duration heartbeat = absl::Milliseconds(250);
  // The cluster and shard this node belongs to ("" = not configured), named
  // in every Hello; a follower refuses a leader of another shard.
  std::string cluster;
  std::string shard;
  // This node's id; "" = the one kept in the data directory (NODE_ID).
  std::string node_id;
  // A (re)starting leader waits this long for every follower to answer its
  // handshake; after it, it leads once enough have answered: any number under
  // async acks, followers - sync_acks + 1 under sync acks (so it has seen
  // every follower a sync-acknowledged write may be on).
  absl::Duration start_wait = absl::Seconds(3);
  // How long Promote waits for each follower's position.
  absl::Duration position_timeout = absl::Seconds(2);
  // How this node reaches its followers (and asks positions): required, must
  // outlive the node.
  ReplicationTransport* transport = nullptr;
  // Monotonic time for every deadline, timeout, lag and backoff here.
  Clock* clock = RealClock();
  // How often the node's timer thread looks at deadlines (a FakeClock only
  // moves when told, so tests make this short).
  absl::Duration tick = absl::Milliseconds(100);
  // Leadership is decided outside the node (etcd mode, common/failover): the
  // node starts as a replica whatever its role and EPOCH file say, leads only
  // through LeadEpoch, and Promote goes to the promote handler.
  bool coordinated = false;
  // A member of the in-sync set (LeadEpoch with a recorder) that is silent or
  // behind for this long leaves it (in_sync_set.h).
  absl::Duration isr_timeout = absl::Seconds(1);
};

// The in-sync set of a coordinated leadership under sync acks (etcd mode).
struct InSyncRecording {
  // Records the leader's in-sync followers (addresses) outside the node, in
  // etcd, blocking (bounded by its own deadline). OK only when they are
  // recorded exactly; any error means the outcome is unknown. Called from one
  // node thread, never with the node's locks held.
  std::function<absl::Status(uint64_t epoch, const std::vector<std::string>& followers)> record;
  // The followers in sync when the leadership begins (the previous set's).
  std::vector<std::string> initial;
};

class FollowerLink;

// `store`'s log position as a follower states it, with `epoch` (the highest it
// has seen). The durable index is read first: it only grows, so it never
// exceeds the last index read after it.
v1::Position LogPosition(Store* store, uint64_t epoch);

class ReplicationNode final : public ReplicationHooks {
 public:
  // `store` must outlive the node. Reads <dir>/EPOCH. Takes no writes until Start.
  static absl::StatusOr<std::unique_ptr<ReplicationNode>> Create(Store* store, NodeOptions options,
                                                                 Role role);
  // Once the server listens: `advertise` is this node's address when
  // options.advertise is empty. Settles the role (a leader whose EPOCH file
  // shows a newer epoch led by someone else starts deposed; a node that led the
  // newest epoch it knows leads again) and a leader starts its links.
  void Start(const std::string& advertise);
  std::string advertise() const;
  ~ReplicationNode() override;
  ReplicationNode(const ReplicationNode&) = delete;
  ReplicationNode& operator=(const ReplicationNode&) = delete;

  // Stops the links and fails pending replica waits with UNAVAILABLE.
  void Stop();

  // Readiness (what the health service reports for kvstore.v1.KeyValue): a
  // leader is ready once it leads (Start, Promote) and not ready once deposed;
  // a replica is ready once it has applied everything its leader had when the
  // stream began (the Hello's last index; after a snapshot install, once its
  // state is whole again), and stays ready after that. `on_change` runs on
  // each change (at once if the node is already ready), in order, never with
  // mu_ held; it must not call back into the node. Call before Start.
  void SetReadinessCallback(std::function<void(bool ready)> on_change);
  bool ready() const;

  Role role() const;
  uint64_t epoch() const;

  // ReplicationHooks.
  absl::Status CheckWritable(std::string* leader) override;
  absl::Status CheckReadable(bool leader_read, std::string* leader) override;
  int DefaultSyncAcks() override { return options_.sync_acks; }
  int FollowerCount() override;
  void AwaitReplicas(uint64_t index, int replicas,
                     std::function<void(const absl::Status&)> done) override;
  void FillStatus(v1::StatusResponse* response) override;
  absl::StatusOr<PromoteResult> Promote(uint64_t epoch, std::vector<std::string> followers,
                                        bool force) override;

  // OK while an answered write may still be acknowledged: always in static
  // mode; in coordinated mode only while this node leads and its guard holds.
  absl::Status CheckAcknowledge() override;
  // See ReplicationHooks. A leader named a newer epoch fences itself (see the
  // top of this file) before the refusal is returned; in coordinated mode the
  // router-fence handler is called once per fence, outside the node's locks.
  absl::Status CheckRouterEpoch(uint64_t epoch, std::string* leader) override;

  const std::string& node_id() const { return node_id_; }

  // ---- Coordinated leadership (etcd mode, common/failover) ----
  // Whether this node may still act as the leader it became through LeadEpoch
  // (its lease is valid). Consulted before a write is admitted, before a
  // waiting write is acknowledged or published, and before a leader read; it
  // must be cheap, thread-safe, and must not call into the node.
  using LeadershipGuard = std::function<bool()>;
  // Leads exactly `epoch`, pushing to `followers`, without asking their
  // positions first (the coordinator decided who is eligible). Blocks until
  // the epoch is durable. FAILED_PRECONDITION, leading nothing, when `epoch`
  // is not above every epoch this node has seen, when it leads already or its
  // store is not whole; UNAVAILABLE when the guard fails before it leads.
  // With `in_sync.record` under sync acks, a write is acknowledged only once
  // every follower of the in-sync set holds it, and a follower leaves that set
  // only once the set without it is recorded (in_sync_set.h); writes are
  // refused with UNAVAILABLE while fewer than sync_acks followers are in it.
  absl::Status LeadEpoch(uint64_t epoch, std::vector<std::string> followers, LeadershipGuard guard,
                         InSyncRecording in_sync = {});
  // The leader key of every epoch up to `epoch` is gone: refuse the streams
  // and Hellos of those epochs from now on (the current one is ended).
  void FenceEpochsThrough(uint64_t epoch);
  // Why the coordinator cannot work ("" when it can): named in the refusals
  // of a node that does not lead (an etcd outage).
  void SetCoordinationProblem(const std::string& problem);
  // The in-sync followers as last recorded, and whether the set is in use.
  bool InSyncFollowers(std::vector<std::string>* followers) const;
  // Stops leading at once (the lease is lost): fences the store, fails the
  // writes waiting for replicas with UNAVAILABLE naming `reason`, and waits as
  // a replica for the next leader's Hello. No-op when not leading.
  void StepDown(const std::string& reason);
  // ---- Graceful leadership transfer (etcd mode, docs/failover.md §8a) ----
  // Pauses writes: from now on CheckWritable refuses them with UNAVAILABLE
  // ("leadership transfer to `to` in progress", naming no leader), and the
  // store is fenced, so a write admitted before the pause either has its
  // index already or is refused unapplied. Returns the store's last index,
  // final while the pause lasts. FAILED_PRECONDITION when not leading.
  absl::StatusOr<uint64_t> PauseWritesForTransfer(const std::string& to);
  // Ends a pause that did not end in StepDown: writes are admitted again if
  // this node still leads. No-op without a pause.
  void ResumeWrites();
  // Waits until the follower at `address` holds `index` durably (its acks on
  // the current stream), at most `timeout`; returns its durable index then
  // (0 when this node has no link to it or stopped leading).
  uint64_t AwaitFollowerDurable(const std::string& address, uint64_t index, absl::Duration timeout);
  // A leader pushes to these followers too; the ones it has are kept.
  void AddFollowers(const std::vector<std::string>& followers);
  // The leader according to the coordinator ("" when none): named in the
  // refusals of a node that does not lead, instead of the last stream's.
  void SetCoordinatorLeader(const std::string& address);
  // Coordinated mode: called (on the refused write's thread; it must not
  // block) when a router's newer epoch fenced this leader, with that epoch.
  // The coordinator then checks its leadership and calls StepDown or
  // ResumeAfterRouterFence. Call before Start.
  void SetRouterFenceHandler(std::function<void(uint64_t epoch)> handler);
  // The coordinator confirmed that this node still leads `epoch` (a
  // linearizable read of its leader key): the router fence ends and writes
  // are admitted again. No-op unless it leads `epoch` and is fenced.
  void ResumeAfterRouterFence(uint64_t epoch);
  // The epoch a router named that fenced this leader (0: not fenced).
  uint64_t router_fenced_epoch() const;
  // What Admin.Promote does in coordinated mode (campaign for the leader
  // key). Call before Start.
  void SetPromoteHandler(std::function<absl::StatusOr<PromoteResult>(bool force)> handler);

  // ---- Follower side (ReplicationService) ----
  // A leader says hello: OK to follow it (the stream becomes the current one,
  // *generation identifies it), or FAILED_PRECONDITION when it names another
  // cluster or shard, its epoch is stale, this node leads that epoch itself, or
  // another leader id leads it. Stepping down fences the store and fails the
  // sync writes waiting on followers.
  // *reason is then the Refused.reason to send (see replication.proto).
  absl::Status AcceptLeader(const v1::Hello& hello, uint64_t* generation, std::string* reason);
  // A node being promoted to request.epoch asks this one to promise it
  // (replication.proto, Replication.Promise). Like a vote: the epoch and its
  // candidate are recorded durably first; from then on this node refuses every
  // older epoch's Hello, the current stream (an older epoch's) applies and acks
  // nothing more, and a leader steps down (its waiting writes fail with
  // UNAVAILABLE). Then it returns its position, which no older stream can move
  // any more. Answering the same candidate again is fine; FAILED_PRECONDITION
  // when this node knows a newer epoch, promised or led this one elsewhere,
  // runs in etcd mode, or belongs to another cluster or shard.
  absl::StatusOr<v1::Position> PromiseEpoch(const v1::PromiseRequest& request);
  // The stream's records diverged from this log (AppendReplicated said so):
  // not ready until a resync has brought it back.
  void MarkDiverged(const std::string& why);
  // False once a newer stream has replaced stream `generation`, or on Stop.
  bool IsCurrentStream(uint64_t generation) const;
  // The leader's last index as last heard, for lag.
  void NoteLeaderIndex(uint64_t leader_last_index);
  std::string leader() const;
  // Highest epoch seen (durable).
  uint64_t promised_epoch() const;

  // Held across "is this stream current?" + applying its message, and across
  // accepting a new leader + reporting the position to it, so that an old
  // stream can never apply anything after a new leader learned the position.
  absl::Mutex& stream_mu() ABSL_LOCK_RETURNED(stream_mu_) { return stream_mu_; }

  // ---- Leader side (FollowerLink) ----
  // A follower refused us with a newer epoch: step down for good.
  void Depose(uint64_t epoch, const std::string& leader);
  // This node must not lead (it lost writes a follower holds, or another
  // leader holds its epoch): refuses writes until restarted; says why.
  void RefuseToLead(const std::string& reason);
  // A follower's durable index moved.
  void OnAck();
  // Link `address` completed a handshake: the follower is at `position`.
  // False when that position shows this node must not lead (RefuseToLead has
  // then been called): a (re)starting leader behind a follower.
  bool OnHandshake(const std::string& address, const v1::Position& position);

  Store* store() const { return store_; }
  ReplicationTransport* transport() const { return options_.transport; }
  Clock* clock() const { return options_.clock; }
  const NodeOptions& options() const { return options_; }

 private:
  struct Waiter {
    uint64_t index;
    int replicas;
    absl::Time deadline;
    std::function<void(const absl::Status&)> done;
  };

  ReplicationNode(Store* store, NodeOptions options, Role role);
  // The injected monotonic clock as an absl::Time (arbitrary origin).
  absl::Time Now() const { return absl::FromUnixMicros(options_.clock->NowMicros()); }
  void SettleRoleAndStartLinks(const std::string& advertise) ABSL_LOCKS_EXCLUDED(mu_);
  // Records (epoch, leader) durably; `followers` only when this node leads it.
  absl::Status PersistEpoch(uint64_t epoch, const std::string& leader, const std::string& leader_id,
                            const std::vector<std::string>& followers = {})
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `needed`: what each follower was known to need (see FollowerLink).
  void StartLinks(const std::vector<std::string>& followers, uint64_t epoch,
                  const std::map<std::string, uint64_t>& needed = {})
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stops the links and moves them to retired_links_ (joined by the timer
  // thread or Stop: a link may be the caller).
  void RetireLinks() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Steps down: fences the store, retires the links, hands back the waiters.
  std::vector<std::function<void(const absl::Status&)>> StepDownLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A (re)starting leader whose followers all answered: start the new epoch.
  void MaybeBeginEpoch() ABSL_LOCKS_EXCLUDED(mu_, stream_mu_);
  // Runs waiters whose condition holds or whose deadline passed.
  void TimerThread();
  // Highest index the in-sync followers (sync_acks of them) hold durably
  // while leading under sync acks; 0 otherwise.
  uint64_t CommitIndexLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Advances the store's commit index, then calls the collected waiters.
  // Call without mu_.
  void FireReady(
      uint64_t commit,
      std::vector<std::pair<std::function<void(const absl::Status&)>, absl::Status>>* ready);
  // Collects the waiters that are done; call their callbacks without mu_.
  void CollectReady(
      absl::Time now,
      std::vector<std::pair<std::function<void(const absl::Status&)>, absl::Status>>* ready)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int CountAcked(uint64_t index) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Each link's durable index, by follower address.
  InSyncSet::AckedIndexes AckedIndexesLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Applies the in-sync rules now (no-op without an in-sync set).
  void ObserveInSyncLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records the in-sync set's proposals, one at a time.
  void InSyncThread();
  // The guard of a coordinated leadership holds (true without one), and no
  // router's newer epoch fenced it.
  bool GuardHoldsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return router_fenced_epoch_ == 0 && (!guard_ || guard_());
  }
  // The leader named in refusals: the coordinator's when known.
  std::string NamedLeaderLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Promote and LeadEpoch after their checks: records `epoch` (0: the next
  // one), starts it in the log and leads it, pushing to `followers`.
  absl::StatusOr<uint64_t> BeginLeading(uint64_t epoch, std::vector<std::string> followers,
                                        LeadershipGuard guard, InSyncRecording in_sync = {})
      ABSL_LOCKS_EXCLUDED(mu_, stream_mu_);
  // Hands ready_ to the readiness callback if it changed since last time.
  void PublishReadiness() ABSL_LOCKS_EXCLUDED(mu_);

  Store* const store_;
  const NodeOptions options_;
  std::string node_id_;
  EpochRecord file_;  // EPOCH as read at Create.

  absl::Mutex stream_mu_ ABSL_ACQUIRED_BEFORE(readiness_mu_);
  // Serialises readiness callbacks, so that they run in the order of changes.
  absl::Mutex readiness_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  std::function<void(bool)> on_readiness_ ABSL_GUARDED_BY(readiness_mu_);
  bool published_ready_ ABSL_GUARDED_BY(readiness_mu_) = false;
  mutable absl::Mutex mu_;
  bool ready_ ABSL_GUARDED_BY(mu_) = false;
  // A replica's first catch-up: the leader's last index named by the Hello of
  // the current stream.
  bool catch_up_target_known_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t catch_up_target_ ABSL_GUARDED_BY(mu_) = 0;
  Role role_ ABSL_GUARDED_BY(mu_);
  std::string deposed_reason_ ABSL_GUARDED_BY(mu_);
  uint64_t promised_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  // The newest epoch whose records this node wrote as its leader (0: none):
  // it never follows another leader of that epoch.
  uint64_t self_led_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  // The epoch this node asks its followers to promise it while Promote runs (0: none).
  uint64_t campaign_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  std::string leader_ ABSL_GUARDED_BY(mu_);     // Who leads, when not us.
  std::string leader_id_ ABSL_GUARDED_BY(mu_);  // Its id ("" when unknown).
  std::string shard_ ABSL_GUARDED_BY(mu_);      // The shard followed ("" when unknown).
  std::string cluster_ ABSL_GUARDED_BY(mu_);
  std::string not_ready_reason_ ABSL_GUARDED_BY(mu_);
  uint64_t stream_generation_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t leader_last_index_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time caught_up_at_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<FollowerLink>> links_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<FollowerLink>> retired_links_ ABSL_GUARDED_BY(mu_);
  // The followers this leader pushes to.
  std::vector<std::string> followers_ ABSL_GUARDED_BY(mu_);
  // A leader takes writes only once its epoch started (Promote, or after every
  // follower answered a (re)start's handshake: contacted_).
  bool leading_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::string> contacted_ ABSL_GUARDED_BY(mu_);
  uint64_t highest_follower_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  bool beginning_epoch_ ABSL_GUARDED_BY(mu_) = false;
  bool begin_wanted_ ABSL_GUARDED_BY(mu_) = false;  // Wakes the timer thread.
  absl::Time leading_attempt_since_ ABSL_GUARDED_BY(mu_);
  bool lead_now_ ABSL_GUARDED_BY(mu_) = false;  // promote --force on a waiting leader.
  std::vector<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  uint64_t ack_events_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // The member a paused leader hands over to ("" when writes are not paused).
  std::string transfer_to_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  LeadershipGuard guard_ ABSL_GUARDED_BY(mu_);             // Coordinated leadership only.
  std::string coordinator_leader_ ABSL_GUARDED_BY(mu_);    // "" when unknown.
  std::string coordination_problem_ ABSL_GUARDED_BY(mu_);  // "" when none.
  uint64_t fenced_through_ ABSL_GUARDED_BY(mu_) = 0;       // FenceEpochsThrough.
  // A router named this epoch, newer than the one this node leads: its guard
  // fails until StepDown or ResumeAfterRouterFence (coordinated mode).
  uint64_t router_fenced_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  std::function<void(uint64_t)> router_fence_handler_;  // Set before Start.
  // The in-sync set of the current leadership (etcd mode, sync acks).
  std::unique_ptr<InSyncSet> isr_ ABSL_GUARDED_BY(mu_);
  uint64_t isr_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  std::function<absl::Status(uint64_t, const std::vector<std::string>&)> isr_record_
      ABSL_GUARDED_BY(mu_);
  std::thread isr_thread_;
  std::function<absl::StatusOr<PromoteResult>(bool)> promote_handler_;  // Set before Start.
  std::string advertise_ ABSL_GUARDED_BY(mu_);
  std::thread timer_;
};

}  // namespace kvstore

#endif  // KVSTORE_COMMON_REPLICATION_NODE_H_
