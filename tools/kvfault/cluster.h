// The cluster of one fault run: one shard group (a kv-shard leader and its
// kv-replica followers) on 127.0.0.1, every node in <run>/nodes/<name>/ with
//   data/        --data-dir
//   port         --port-file (the bound address, read back after a start)
//   <name>-N.log stdout and stderr of the N-th start
// The first start binds port 0; later starts reuse that address, so the
// leader's --followers and the clients keep reaching a restarted node.
// Every process is started here, known by pid and signalled only by it.
//
// Not thread-safe, except leader_address(), which the clients read while
// the nemesis (the only caller of everything else) changes the leader.
#ifndef KVSTORE_TOOLS_KVFAULT_CLUSTER_H_
#define KVSTORE_TOOLS_KVFAULT_CLUSTER_H_

#include <sys/types.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "kvstore/v1/admin.grpc.pb.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "tools/kvfault/history_recorder.h"
#include "tools/kvfault/netns.h"
#include "tools/kvfault/network.h"
#include "tools/kvfault/power_loss.h"

namespace kvstore::fault {

struct ClusterOptions {
  std::string run_dir;
  std::string bin_dir;  // kv-shard, kv-replica, kvctl.
  int replicas = 2;
  // Flags for every server (e.g. --fsync=always, --ack=sync, --sync-acks=2).
  std::vector<std::string> server_flags;
  absl::Duration start_timeout = absl::Seconds(15);
  // When set, every replication link and the clients' link to each node go
  // through its proxies (network.h); not owned, outlives the cluster.
  // In etcd mode only each node's link to etcd does ("n0->etcd").
  Network* network = nullptr;
  // etcd mode (docs/failover.md): a one-member etcd of the run
  // (<run>/etcd/, /usr/bin/etcd on free loopback ports), every node started
  // as a follower with --etcd-endpoints (its own proxy in front of etcd when
  // there is a network), --node-id, --shard and --lease-ttl; leadership
  // comes from the election, and the clients follow it (Cluster::leader()).
  bool etcd = false;
  // When set (`network: netns`), each node runs in its own namespace of it
  // and listens on its 127.100 address there; the driver is in the
  // client's namespace already. Not owned, outlives the cluster.
  Netns* netns = nullptr;
  std::string etcd_binary = "/usr/bin/etcd";
  std::string lease_ttl = "2s";
  // Several shards (etcd mode, shard_groups.h): one Cluster per shard group.
  // `shard` is its --shard, `node_prefix` prefixes its nodes' names ("s1":
  // s1n0, s1n1, ...), and every group but the first names the etcd the first
  // one started in `shared_etcd`: it then starts no etcd of its own, and
  // `kvctl cluster init` is the first group's (InitEtcd).
  std::string shard = "s0";
  std::string node_prefix;
  std::string shared_etcd;
};

enum class NodeState { kDown, kRunning, kPaused };

class Node {
 public:
  Node(std::string name, std::string dir) : name_(std::move(name)), dir_(std::move(dir)) {}
  const std::string& name() const { return name_; }
  std::string data_dir() const { return dir_ + "/data"; }
  std::string port_file() const { return dir_ + "/port"; }
  // The power-loss journal (outside the data dir) when the node runs under
  // libkvfault_preload.so.
  std::string journal_path() const { return dir_ + "/preload.journal"; }
  std::string log_path() const;
  // The log of its n-th start (1-based).
  std::string log_path(int start) const;
  const std::string& dir() const { return dir_; }

  // Set once the node has served; a restart binds the same address.
  std::string address;
  // "kv-shard" or "kv-replica": what the next start runs.
  std::string binary;
  // A leader pushes to these nodes (names).
  std::vector<std::string> followers;
  // Runs under libkvfault_preload.so, so a powerloss can cut its data dir.
  bool preload = false;
  // Added to its environment at each start (libfaketime's variables).
  std::vector<std::string> extra_env;
  // Added to its command line at the next start only (a restart's flags).
  std::vector<std::string> next_start_flags;
  NodeState state = NodeState::kDown;
  pid_t pid = -1;
  int starts = 0;

 private:
  std::string name_;
  std::string dir_;
};

class Cluster {
 public:
  explicit Cluster(ClusterOptions options);
  // SIGKILLs and reaps every process still running.
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  // Starts the replicas n1..nN (kv-replica), then the leader n0 (kv-shard,
  // --followers=them), and waits until the leader streams to all of them.
  // In etcd mode: etcd, then every node, `kvctl cluster init`, and waits
  // for an elected leader that streams to every other node; from then on a
  // thread polls every node's Admin.Status each 100 ms and the clients go
  // to the node that says it leads the highest epoch.
  absl::Status Start();
  // Start in three steps, for several shard groups on one etcd (etcd mode):
  // StartNodes on every group (the first starts etcd), InitEtcd on the first
  // with every group, then AwaitElected on every group.
  absl::Status StartNodes();
  absl::Status InitEtcd(const std::vector<Cluster*>& groups, absl::Time deadline);
  absl::Status AwaitElected(absl::Time deadline);
  const std::string& shard() const { return options_.shard; }
  bool etcd_mode() const { return options_.etcd; }
  // etcd mode: when the leader watch first saw each epoch led (the node and
  // the time on `clock`'s history clock, set before Start). Thread-safe.
  struct EpochSeen {
    std::string node;
    int64_t t_ns = 0;
  };
  void set_clock(const HistoryRecorder* clock) { clock_ = clock; }
  std::map<uint64_t, EpochSeen> epochs_seen() const;
  // "127.0.0.1:PORT" of the run's etcd (etcd mode).
  const std::string& etcd_endpoint() const { return etcd_endpoint_; }

  Node* Find(const std::string& name);
  std::vector<Node*> nodes();
  std::string leader() const;  // Name of the node that leads now.
  // "127.0.0.1:PORT" the clients use to reach the leader (its client link's
  // proxy when there is a network); thread-safe.
  std::string leader_address() const;
  // Both at once: the leader's name and that address; thread-safe.
  std::pair<std::string, std::string> leader_route() const;

  // The command line a start of `node` runs now.
  std::vector<std::string> CommandLine(const Node& node) const;
  // Starts `node` as its `binary` on its address (port 0 the first time) and
  // waits until its port file names the address and health answers.
  // A start that exits early (the port still held) is retried until the
  // timeout. Returns the command line it ran.
  absl::StatusOr<std::vector<std::string>> StartNode(Node* node);
  // Starts `node` expecting it to refuse (exit before serving), e.g. on a
  // damaged log. Returns the log of that start; FAILED_PRECONDITION if it
  // served after all (it is then killed).
  absl::StatusOr<std::string> StartRefused(Node* node, std::vector<std::string>* command);
  // Runs the node's binary with --repair on its data dir (the node is down).
  // Returns what it printed.
  absl::StatusOr<std::string> Repair(Node* node, std::vector<std::string>* command);
  // kill -SIG pid; for SIGKILL also reaps the process.
  absl::Status Signal(Node* node, int sig);
  // Removes the node's data directory (the node must be down), and its
  // power-loss journal.
  absl::Status WipeData(Node* node);
  // Cuts the data dir of a node that runs under the preload and is down back
  // to what its fsyncs made durable (power_loss.h). *command: the equivalent
  // `kvfault powerloss` command line.
  absl::StatusOr<PowerLossReport> CutPower(Node* node, Tear tear, uint64_t seed,
                                           std::vector<std::string>* command);
  // Runs `kvctl --addr=<node> --followers=<names> [--force] promote`; on
  // success the node is the leader. Returns the command and its output; a
  // refusal is FAILED_PRECONDITION with kvctl's output.
  absl::StatusOr<std::string> Promote(Node* node, const std::vector<std::string>& followers,
                                      bool force, std::vector<std::string>* command);
  // One kvctl promote of a race (PromoteAtOnce).
  struct PromoteAttempt {
    Node* node = nullptr;
    std::vector<std::string> followers;  // Names.
    std::vector<std::string> command;    // Filled in.
    absl::StatusOr<std::string> result = absl::UnknownError("not run");
    uint64_t epoch = 0;  // From kvctl's "epoch=N" on success.
  };
  // Starts one `kvctl promote` per attempt, all before waiting for any (two
  // promotions racing), then waits for each. A success makes that node a
  // leader here; when several succeed, the clients go to the one with the
  // highest epoch (the first listed on a tie). Returns the error of a
  // process that could not be run; refusals are in each attempt's result.
  absl::Status PromoteAtOnce(std::vector<PromoteAttempt>* attempts, bool force);
  // The bookkeeping after `node` became the leader pushing to `followers`
  // (names): restarts start it as kv-shard, the clients go to it.
  void ApplyPromotion(Node* node, const std::vector<std::string>& followers);
  // Last log index of a running node (Admin.Status).
  absl::StatusOr<uint64_t> LastIndex(const Node& node);

  // Polls until the leader answers a leader read and every running follower
  // it pushes to has acked its last index, and each such replica reports
  // lag 0. The error says who is behind.
  absl::Status AwaitHealed(absl::Time deadline);

  // The run's proxies, or null when its links are direct.
  Network* network() const { return options_.network; }
  // The run's namespace network, or null.
  Netns* netns() const { return options_.netns; }

  // A channel per address, reused.
  std::shared_ptr<grpc::Channel> Channel(const std::string& address);

  std::string LogTails(size_t bytes = 1500);

  // SIGTERMs every node that runs (a paused one gets SIGCONT first) and waits
  // until `deadline` for each to return from main, so that its exit-time
  // checks run: LeakSanitizer's in an ASan build. The error names every node
  // that exited otherwise than with code 0 (a sanitizer report exits 1) or was
  // still running at the deadline (it is then SIGKILLed).
  absl::Status StopAll(absl::Time deadline);
  // The first line of every AddressSanitizer, LeakSanitizer and
  // UndefinedBehaviorSanitizer report in the logs of every start of every
  // node, as "<log path>: <line>". Empty in a build without sanitizers.
  std::vector<std::string> SanitizerReports() const;

 private:
  absl::StatusOr<std::string> AwaitBound(Node* node, absl::Time deadline);
  // The variables a start of `node` adds to the environment (the preload's).
  absl::StatusOr<std::vector<std::string>> Environment(const Node& node) const;
  // The address `from` pushes its log to `to` at: `to`'s own, or the proxy
  // of the link between them. A proxy that cannot be made is remembered in
  // route_error_ and the direct address returned.
  std::string PeerAddress(const std::string& from, const Node& to) const;
  // The address the clients reach `node` at.
  absl::StatusOr<std::string> ClientAddress(const Node& node);
  void SetLeader(const Node& node);
  // kvctl promote's command line for `node`.
  absl::StatusOr<std::vector<std::string>> PromoteCommand(Node* node,
                                                          const std::vector<std::string>& followers,
                                                          bool force);

  absl::Status StartEtcd();
  // etcd mode: the node that says it leads the highest epoch, by Admin.Status
  // of each of `addresses` (name -> address); "" if none does.
  std::string FindElectedLeader(const std::map<std::string, std::string>& addresses,
                                uint64_t* epoch);
  void WatchLeader(std::map<std::string, std::string> addresses);

  ClusterOptions options_;
  std::string etcd_endpoint_;
  pid_t etcd_pid_ = -1;
  std::thread watcher_;
  std::atomic<bool> stop_watch_{false};
  mutable absl::Status route_error_;
  std::vector<std::unique_ptr<Node>> nodes_;
  mutable absl::Mutex mu_;
  std::string leader_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, EpochSeen> epochs_seen_ ABSL_GUARDED_BY(mu_);
  const HistoryRecorder* clock_ = nullptr;
  std::string leader_address_ ABSL_GUARDED_BY(mu_);
  absl::Mutex channels_mu_;
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_ ABSL_GUARDED_BY(channels_mu_);
};

// Admin.Status of a server.
absl::StatusOr<v1::StatusResponse> FetchStatus(const std::shared_ptr<grpc::Channel>& channel,
                                               absl::Duration timeout);

}  // namespace kvstore::fault

#endif  // KVSTORE_TOOLS_KVFAULT_CLUSTER_H_
