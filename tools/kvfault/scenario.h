// A fault scenario, loaded from tests/fault/scenarios/NAME.yaml: the shard
// group, the servers' flags, the load, the nemesis schedule and what the
// checker must find. docs/reliability.md ("Running the suite") shows a file.
#ifndef KVSTORE_TOOLS_KVFAULT_SCENARIO_H_
#define KVSTORE_TOOLS_KVFAULT_SCENARIO_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/kvfault/net_faults.h"
#include "tools/kvfault/workload.h"

namespace kvstore::fault {

// One nemesis step. Actions:
//   kill     kill -9 `node`                    pause / resume  kill -STOP / -CONT `node`
//            (`node: paused` for resume: every paused node)
//   restart  start `node` again on its address, as `as` ("" = what it was,
//            "replica" = kv-replica on its data dir); `node: followers` = every
//            node but the leader, `node: down` = every node that is down
//   wipe     rm -rf the data dir of `node` (down)
//   promote  kvctl promote the most advanced of `candidates` (by last index;
//            "followers" = every node but the one that led),
//            pushing to `followers` ("others" = every other running node);
//            force "never" or "if-refused" (retry with --force after a refusal)
//   promote-race  kvctl promote on each of `candidates` ("followers" or
//            none: every node but the leader) at the same instant, each
//            pushing to every other node; when all are refused and `force` is
//            "if-refused", all again with --force at once. The clients follow
//            the promoted node of the highest epoch.
//   settle   after a race: wait up to `wait_s` for a node that leads with
//            every follower streaming and send the clients to it; if none
//            does, `promote` (candidates, followers, force as that step;
//            default every node but the leader, pushing to the others)
//   await-healed  poll until the leader serves and its running followers caught up
//   powerloss  kill -9 `node` ("all": every running node at once) and cut each
//            one's data dir back to what its fsyncs made durable (`kvfault
//            powerloss`, `tear` none | prefix | zero-sector); the nodes must
//            run under the preload (Scenario::preload)
//   bitflip  flip one bit of `file` ("wal": the newest log segment,
//            "snapshot": the newest snapshot) of `node` (down), at a seeded
//            offset in the middle half of it (`where: middle`) or anywhere
//   repair   run the node's binary with --repair on its data dir (down)
//   restart  with `flags`: added to that start's command line only
//   net      put a fault on links (network.h; the run then has proxies):
//            `link` "A->B", A and B a node name, `leader`, `followers`
//            (every node but the leader), `*` (every node), A also
//            `client`; "A<->B" both ways. `mode` blackhole | delay (delay_ms
//            ± jitter_ms) | rate (rate_kbps, kilobits/s) | refuse | reset
//            (close the open connections, one-shot) | heal (no fault)
//   probe-write  a Set straight to `node` (not through a proxy), which
//            must be refused with FAILED_PRECONDITION naming the leader's
//            address (`expect: refused-naming-leader`)
//   partition  (`network: netns`, netns.h) nft drops in the nodes'
//            namespaces: `mode: isolate` cuts `node` from every other node
//            both ways; `split` cuts `minority` (names, `leader`; default the
//            leader) from the other nodes both ways; `one-way` drops only the
//            packets of `link` "A->B" (as for net, no `client`); `heal`
//            deletes every table (loss too). The clients reach every node.
//   loss     (`network: netns`) drop `percent` % of the packets `node` sends
//            and receives, at random (0 ends it)
//   restart  with `after_bitflip: refuse`: the start must exit without
//            serving and its log name the flipped file and an offset at or
//            before the flipped byte; `detect`: it must serve and its log name
//            the flipped file
struct Step {
  double at_s = 0;      // Seconds after the load starts...
  double jitter_s = 0;  // ...plus a seeded uniform draw in [0, jitter_s).
  std::string action;
  std::string node;
  std::string as;
  std::vector<std::string> candidates;
  std::vector<std::string> followers;
  std::string force = "never";
  std::string tear = "none";
  // powerloss: wait up to this long for the node to hold bytes its fsyncs
  // have not made durable yet, and cut then (0: cut at once).
  double until_unsynced_s = 0;
  // ...then wait up to this long for a client to get an acknowledgement,
  // and cut only if bytes are still pending (see nemesis.cc).
  double unsynced_hold_ms = 0;
  // powerloss, instead of the two above: wait up to this long until a write
  // acknowledged to a client is durable on none of the targets (acked_cut.h:
  // proved from the journals and the history, then confirmed with the
  // targets stopped), and cut then; at the deadline, cut anyway and say so.
  double until_acked_unsynced_s = 0;
  std::string file;              // bitflip
  std::string where = "middle";  // bitflip
  std::string after_bitflip;     // restart: "", "refuse" or "detect"
  // The disk, clock and I/O-error actions (nemesis_disk.h):
  std::string failpoint;           // failpoint: its name (storage_failpoints.h)
  int failnum = 1;                 // failpoint: libfiu's failnum (the errno; 1 = EIO)
  double exit_within_s = 0;        // failpoint, fill-disk: the node must die this soon
  std::string clock;               // clock: the faketime offset, e.g. "+300"
  int64_t size_mib = 0;            // grow-disk: the tmpfs's new size
  double wait_s = 10;              // bitflip-live, watch-index
  int64_t bytes = 0;               // truncate-log
  std::string expect_log;          // watch-index: text the leader's log must show
  std::vector<std::string> flags;  // restart: extra flags for that start only
  NetStep net;                     // net: link, mode, delay_ms, jitter_ms, rate_kbps
  std::string expect;              // probe-write
  std::vector<std::string> minority;  // partition split
  int percent = 0;                    // loss
  // Several shards: the group the step acts on ("" = the first, "random" =
  // a seeded draw, "same" = the previous step's, or a name "s1"); `leader`,
  // `followers` and node names ("n1" = s1n1 there) are that group's.
  std::string shard;
};

// Whether `action` is one of nemesis_disk.h's.
bool IsDiskAction(const std::string& action);

struct Expect {
  // "zero" (lost must be 0), "positive" (a control: lost must be > 0) or
  // "any" (measured and reported, e.g. under --fsync=everysec).
  std::string lost = "zero";
  // When >= 0: every lost write was acknowledged at most this long before the
  // power cut that lost it (--fsync=everysec: 1 s + the fsync's duration).
  double max_lost_age_s = -1;
  // Violation kinds allowed besides lost-write (a control loses writes, which
  // also makes their keys non-linearizable).
  std::vector<std::string> allowed_violations;
  int64_t min_acked = 500;  // Fewer acked writes: the run proved nothing.
  bool replicas_equal = true;
  // Writes acknowledged while a blackhole isolated the leader from every
  // follower (net_faults.h): "zero" (sync acks) or "any" (reported).
  std::string acked_while_isolated = "any";
  // Full resyncs (snapshots sent) the leader must report after the heal.
  int64_t min_full_resyncs = 0;
};

struct Scenario {
  std::string name;
  std::string description;
  int replicas = 2;
  std::vector<std::string> server_flags;
  // Nodes that run under libkvfault_preload.so ("all" for every one).
  std::vector<std::string> preload;
  LoadOptions load;  // Seed left to the run.
  std::vector<Step> nemesis;
  Expect expect;
  int64_t check_time_limit_ms = 10000;  // Per key; past it the key is undecided.
  // Needs servers built with -DKV_FAULT_CONTROLS=ON (--unsafe-ack-before-fsync);
  // without them the run reports itself skipped.
  bool requires_controls = false;
  // Nodes whose data dir is a tmpfs of tmpfs_size_mib ("all" for every one;
  // needs root), and nodes run under libfaketime (nemesis_disk.h).
  std::vector<std::string> tmpfs_nodes;
  int64_t tmpfs_size_mib = 64;
  std::vector<std::string> faketime;
  // Links through TCP proxies (network.h): on when a step is `net`, or
  // when `network: proxy` asks for it.
  bool proxies = false;
  // etcd mode (`etcd: true`, cluster.h ClusterOptions::etcd): a run's own
  // etcd, automatic failover, and each node's link to etcd through a proxy.
  bool etcd = false;
  std::string lease_ttl = "2s";  // --lease-ttl in etcd mode (at least 2s).
  // `network: netns` (netns.h): every node in its own network namespace,
  // partitions and loss by nft. Needs root; excludes proxies and etcd mode.
  bool netns = false;
  // etcd mode: kv-router processes in front (routers.h); the clients go
  // through them instead of to the leader.
  int routers = 0;
  // etcd mode: shard groups s0..sN-1 of `replicas` + 1 nodes each, nodes
  // named s0n0, s0n1, ... when there is more than one (shard_groups.h).
  int shards = 1;
  std::string path;
};

absl::StatusOr<Scenario> LoadScenario(const std::string& path);

}  // namespace kvstore::fault

#endif  // KVSTORE_TOOLS_KVFAULT_SCENARIO_H_
