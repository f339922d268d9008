// FailoverAgent: the leadership loop of one kv-shard or kv-replica in etcd
// mode (docs/failover.md). Every member of a shard runs the same loop:
//
//   - It keeps a lease (coord::Lease) and, on it, its member key
//     <P>/shards/<s>/members/<id> {addr, state, last_epoch, durable_index},
//     rewritten when it changes, at most every `refresh`.
//   - It watches <P>/shards/<s>/ (coord::TopologyView). While nobody holds the
//     leader key it waits `election_wait`, reads the live members, and
//     campaigns only if coord::ChooseCandidate names it (never in manual
//     mode: there an operator's `kvctl promote` campaigns).
//   - Having won, it makes the node lead exactly epoch_base + the key's create
//     revision (ReplicationNode::LeadEpoch) pushing to the other members, and
//     adds members that appear later as followers. The node's leadership guard
//     is the lease's validity, so a leader stops admitting and acknowledging
//     writes the moment valid_until passes; the lease's "lost" then steps the
//     node down (fenced, waiting writes failed with UNAVAILABLE). A leader
//     whose key is gone, or whose node stopped leading, resigns the key.
//   - Not leading, it tells the node who holds the key, so refusals name the
//     leader; the new leader's Hello does the rest (handshake rules). When
//     the view shows no leader key at revision R, every epoch up to
//     epoch_base + R is over: the node refuses their streams from then on.
//   - Sync mode: the leader keeps <P>/shards/<s>/isr {epoch, members} (the
//     node's in-sync set, ids, itself first), written by a Txn guarded by its
//     leader key and by the isr key's last mod revision; the election runs
//     among the live members of that set (coord::ChooseCandidate). An
//     async-mode leader deletes the key.
//   - Async mode: the leader records how far it got, with its
//     --max-lag-on-failover, in <P>/shards/<s>/position (guarded, on no
//     lease); an election refuses members further behind than that.
//   - Graceful transfer (<P>/shards/<s>/handoff, written by kvctl promote):
//     the leader it names pauses writes, waits at most kMaxTransferPause for
//     the target to hold its whole log, then steps down and resigns (or, not
//     caught up, resumes writes and deletes the request), recording what it
//     did in <P>/shards/<s>/last_handoff. The target campaigns at once when
//     the key is gone, the others defer to it (coord::ChooseCandidate), and
//     the winner deletes the handoff key.
//   - Router epochs: a router that names a newer epoch than the one this node
//     leads fences it at once (ReplicationNode::CheckRouterEpoch: nothing more
//     is admitted or acknowledged). The loop then reads the leader key
//     (linearizable): no longer ours → the node steps down and the key is
//     resigned (guarded) as when it is seen gone; still ours (a confused
//     router) → the node resumes leading and a warning is logged. A read that
//     fails is retried each tick while the lease lasts; the lease's loss
//     steps the node down as usual.
//   - etcd unreachable (no lease): the node names the outage in its refusals.
//
// Threads: one loop thread, woken by the view, the lease and a short timer.
// The lease's on_lost steps the node down on the lease's own thread, without
// waiting for the loop. Campaign (Admin.Promote) runs on the caller's thread.
// All public methods are thread-safe.
#ifndef KVSTORE_COMMON_FAILOVER_FAILOVER_AGENT_H_
#define KVSTORE_COMMON_FAILOVER_FAILOVER_AGENT_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/coord/etcd_client.h"
#include "common/coord/leader_key.h"
#include "common/coord/lease.h"
#include "common/coord/monotonic_clock.h"
#include "common/coord/schema.h"
#include "common/coord/topology_view.h"
#include "common/metrics/coord_metrics.h"
#include "common/replication/node.h"

namespace kvstore {

struct FailoverOptions {
  std::string prefix;     // --etcd-prefix.
  std::string shard;      // Required.
  std::string advertise;  // This node's client address, as members and routers reach it.
  absl::Duration lease_ttl = absl::Seconds(3);
  absl::Duration lease_margin = absl::Milliseconds(500);
  bool automatic = true;  // --failover=auto; false: manual.
  absl::Duration election_wait = absl::Milliseconds(500);
  // Least time between two writes of the member key.
  absl::Duration refresh = absl::Milliseconds(250);
  // --max-lag-on-failover (async mode): this node, while it leads, records
  // its position with this limit in <P>/shards/<s>/position, and an election
  // then refuses every member more than this many entries behind it
  // (coord::ChooseCandidate). 0: no limit.
  uint64_t max_lag_on_failover = 0;
  // How often the loop looks again without being woken.
  absl::Duration tick = absl::Milliseconds(100);
  coord::MonotonicClock clock = coord::SteadyNanos;
  // Elections won, self-fences, the lease's time left; may be null. Must
  // outlive the agent.
  CoordMetrics* metrics = nullptr;
};

class FailoverAgent {
 public:
  // `client` and `node` must outlive the agent. INVALID_ARGUMENT for a
  // missing shard or address, or a lease TTL below coord::Lease::kMinTtl.
  static absl::StatusOr<std::unique_ptr<FailoverAgent>> Create(coord::EtcdClient* client,
                                                               ReplicationNode* node,
                                                               FailoverOptions options);
  // Stop().
  ~FailoverAgent();
  FailoverAgent(const FailoverAgent&) = delete;
  FailoverAgent& operator=(const FailoverAgent&) = delete;

  // Starts the loop (after the node's Start: it needs the node's address).
  void Start();
  // Ends the loop; a leader steps down and resigns its key, and the lease is
  // revoked (its member key goes with it), so the others elect at once.
  void Stop();

  // Admin.Promote in etcd mode: campaign now. Unless `force`, only when this
  // node is the one the eligibility rule names. FAILED_PRECONDITION saying
  // why not, or naming the current holder.
  absl::StatusOr<ReplicationHooks::PromoteResult> CampaignNow(bool force);

  // The longest a leader pauses writes for a graceful transfer.
  static constexpr absl::Duration kMaxTransferPause = absl::Seconds(2);

  // Ends this node's leadership (it steps down and resigns its key) so that
  // the shard elects again and the winner, this node or another, leads a
  // newer epoch: what a resharding destination needs when a source's epoch
  // has overtaken its own (docs/resharding.md). FAILED_PRECONDITION when
  // this node does not lead.
  absl::Status Reelect(const std::string& why);

 private:
  FailoverAgent(coord::EtcdClient* client, ReplicationNode* node, FailoverOptions options);

  void Run();
  // One look at everything; the loop calls it under mu_.
  void Step() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool EnsureClusterRecord() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool EnsureLease() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishMember(bool now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // While leading in async mode: <P>/shards/<s>/position, guarded by the
  // leader key, at most every `refresh` and only when it changed.
  void PublishPosition() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The position the last async leader recorded; nullopt when none.
  absl::StatusOr<std::optional<coord::PositionRecord>> ReadPosition();
  // Campaigns (if eligible, or forced) and leads on a win.
  absl::StatusOr<ReplicationHooks::PromoteResult> Campaign(bool force)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // While leading: acts on the handoff key (`value` as read): hands over to
  // `to_addr` (the target's address, "" when it is no live member), or
  // deletes a request that is stale, past its deadline, or not for us.
  void HandOver(const coord::HandoffRecord& handoff, const std::string& value,
                const std::string& to_addr) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The pending handoff request, if any (a linearizable read).
  absl::StatusOr<std::optional<coord::HandoffRecord>> ReadHandoff();
  // Gives up a leadership the node no longer exercises.
  void EndLeadership(const std::string& why, bool resign) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnLeaseLost(const absl::Status& why);
  // The node's router-fence handler (any thread, must not block): counts the
  // fence and wakes the loop, which calls CheckRouterFence.
  void OnRouterFence(uint64_t epoch);
  // While leading and fenced by a router's epoch: reads the leader key and
  // steps down, or resumes the node's leadership (see the top).
  void CheckRouterFence() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The node's in-sync recorder: writes the set of `leadership` (follower
  // addresses mapped to ids). Runs on the node's thread, never under mu_.
  absl::Status RecordInSync(coord::LeaderKey* key, const coord::Leadership& leadership,
                            uint64_t epoch, const std::vector<std::string>& followers);
  // The current isr record and its mod revision (0 when absent).
  absl::StatusOr<std::optional<coord::IsrRecord>> ReadIsr(int64_t* mod_revision);
  void Wake();
  int64_t Now() const { return options_.clock(); }

  coord::EtcdClient* const client_;
  ReplicationNode* const node_;
  const FailoverOptions options_;
  std::string id_;
  std::string member_key_;

  // Agent state: the loop thread and CampaignNow.
  absl::Mutex mu_ ABSL_ACQUIRED_BEFORE(wake_mu_);
  std::unique_ptr<coord::LeaderKey> leader_key_
      ABSL_GUARDED_BY(mu_);  // Once the cluster record is read.
  std::shared_ptr<coord::Lease> lease_ ABSL_GUARDED_BY(mu_);
  std::optional<coord::Leadership> leadership_ ABSL_GUARDED_BY(mu_);
  std::optional<coord::MemberRecord> published_ ABSL_GUARDED_BY(mu_);
  int64_t published_at_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<coord::PositionRecord> position_published_ ABSL_GUARDED_BY(mu_);
  int64_t position_published_at_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t absent_since_ ABSL_GUARDED_BY(mu_) = 0;  // 0: a leader is known.
  int64_t next_attempt_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_lease_attempt_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_refusal_ ABSL_GUARDED_BY(mu_);  // Logged once per change.
  bool cluster_missing_logged_ ABSL_GUARDED_BY(mu_) = false;
  std::string handled_handoff_ ABSL_GUARDED_BY(mu_);         // The id last acted on.
  std::string campaigned_for_handoff_ ABSL_GUARDED_BY(mu_);  // Campaigned at once for it.

  // Member ids by address (from every view seen), and the isr key's mod
  // revision as this leader last wrote or read it: the recorder's state.
  absl::Mutex ids_mu_;
  std::map<std::string, std::string> id_of_addr_ ABSL_GUARDED_BY(ids_mu_);
  int64_t isr_mod_revision_ ABSL_GUARDED_BY(ids_mu_) = 0;
  // The set this leadership last recorded, and its epoch (for the metrics).
  std::vector<std::string> isr_recorded_ ABSL_GUARDED_BY(ids_mu_);
  int64_t isr_recorded_epoch_ ABSL_GUARDED_BY(ids_mu_) = 0;
  std::string isr_key_;

  // The newest epoch a router named to fence this node, until the loop looked
  // at the leader key (0: none pending).
  std::atomic<uint64_t> router_fence_{0};

  absl::Mutex wake_mu_;
  bool wake_ ABSL_GUARDED_BY(wake_mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(wake_mu_) = false;

  std::unique_ptr<coord::TopologyView> view_;
  std::thread thread_;
};

}  // namespace kvstore

#endif  // KVSTORE_COMMON_FAILOVER_FAILOVER_AGENT_H_
