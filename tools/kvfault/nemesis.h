// Runs a scenario's fault schedule against the cluster and logs every action
// to nemesis.jsonl with the exact command line, so a person can replay it by
// hand: {"t_ns", "step", "action", "node", "command", "ok", "error", ...}.
// t_ns is on the history's clock. One thread calls Run; the cluster is only
// changed from it (and from the heal that follows, after Run returned).
#ifndef KVSTORE_TOOLS_KVFAULT_NEMESIS_H_
#define KVSTORE_TOOLS_KVFAULT_NEMESIS_H_

#include <cstdint>
#include <cstdio>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tools/kvfault/bit_flip.h"
#include "tools/kvfault/cluster.h"
#include "tools/kvfault/history_recorder.h"
#include "tools/kvfault/net_faults.h"
#include "tools/kvfault/scenario.h"

namespace kvstore::fault {

// A fault window, for the figures: from a step to the next await-healed or
// the end of the schedule.
struct StepRecord {
  std::string action;
  std::string node;
  int64_t t_ns = 0;
};

class Nemesis {
 public:
  Nemesis(Cluster* cluster, const HistoryRecorder* clock, std::string log_path, uint64_t seed);
  ~Nemesis();
  Nemesis(const Nemesis&) = delete;
  Nemesis& operator=(const Nemesis&) = delete;

  // Runs `steps` in order, each at its time after `load_start`. Stops at the
  // first step that fails and returns its error. `cancelled` stops the wait
  // for the next step.
  absl::Status Run(const std::vector<Step>& steps, absl::Time load_start,
                   const std::atomic<bool>* cancelled);
  // After the load: SIGCONT every paused node and wait until the leader
  // serves and its running followers have caught up.
  absl::Status Heal(absl::Time deadline);
  // Several shard groups (shard_groups.h): a step acts on the group its
  // `shard` names ("" = the first, "random" = a seeded draw, "same" = the
  // previous step's), and a node name "n1" in it means that group's (s2n1);
  // the heal heals every group. Default: only the constructor's cluster.
  void set_groups(std::vector<Cluster*> groups) { groups_ = std::move(groups); }

  // Logs commands the namespace network ran (netns.h) as nemesis actions
  // "netns-<what>" (or `action` when not empty), one line each.
  void LogNetns(int index, const std::vector<NetnsCommand>& commands, const std::string& action,
                const std::string& note = "");

  const std::vector<StepRecord>& done() const { return done_; }
  // Windows in which the leader was cut off from every follower.
  const std::vector<IsolationWindow>& isolation() const { return isolation_; }

 private:
  absl::Status Execute(int index, const Step& step);
  absl::Status PowerLoss(int index, const Step& step);
  // Polls until a write acknowledged to a client is durable on none of the
  // running `targets` (acked_cut.h), stops them (SIGSTOP) and confirms it,
  // or until the step's until_acked_unsynced_s ran out; says which. The
  // caller kills them, stopped or not.
  absl::StatusOr<std::string> AwaitAckedUnsynced(const Step& step,
                                                 const std::vector<Node*>& targets);
  absl::Status FlipBit(int index, const Step& step, Node* node);
  // A start after a bit flip: refused or detected, as the step says.
  absl::Status RestartAfterFlip(int index, const Step& step, Node* node);
  // The disk, clock and I/O-error actions (nemesis_disk.h).
  absl::Status ExecuteDisk(int index, const Step& step, Node* node);
  // Network faults (nemesis_network.cc).
  absl::Status Net(int index, const Step& step);
  absl::Status ProbeWrite(int index, const Step& step, Node* node);
  absl::Status HealNetwork();
  // The `partition` and `loss` actions (network: netns).
  absl::Status Partition(int index, const Step& step, Node* node);
  // kvctl promote on every candidate at once; retried with --force, again
  // all at once, when every one was refused and the step allows it.
  absl::Status PromoteRace(int index, const Step& step);
  // Opens or closes an isolation window after a step.
  void UpdateIsolation();
  void Log(int index, const std::string& action, const std::string& node,
           const std::string& command, const absl::Status& result, const std::string& note);

  // The group the current step acts on (one of groups_).
  absl::StatusOr<Cluster*> GroupFor(const Step& step);

  Cluster* cluster_;
  std::vector<Cluster*> groups_;
  // Draws `shard: random`; apart from rng_, so a single-shard schedule's
  // draws stay what they were.
  std::mt19937_64 shard_rng_;
  const HistoryRecorder* clock_;
  FILE* log_ = nullptr;
  std::mt19937_64 rng_;
  std::vector<StepRecord> done_;
  std::optional<BitFlip> last_flip_;
  int64_t held_index_ = -1;  // record-index, for watch-index.
  std::vector<IsolationWindow> isolation_;
};

}  // namespace kvstore::fault

#endif  // KVSTORE_TOOLS_KVFAULT_NEMESIS_H_
