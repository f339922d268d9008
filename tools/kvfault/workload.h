// Client load of a fault run (issue 15, "Workloads and the history"):
//   register  a handful of hot keys; Get (leader reads), Set, CAS (if_version
//             = the version this client last saw, 0 = absent) and Delete
//   set       every write a new key: the durability workload
//   replica-reads  Gets with read_mode ANY_REPLICA on the register's hot keys
//             (r0...), recorded as f "read-any": kvcheck checks them only
//             for reading written values of writes that did not fail
//             (tools/kvcheck/replica_reads.h), never for staleness
// With routers (LoadOptions::routers) every client sends all its requests
// to one of them, client i to router i mod N; else to the leader.
// Each logical client is a thread with its own seeded random stream, paced
// to its share of the workload's rate, bounded in count and time. Every
// written value is unique: <workload letter>c<client>-<sequence>.
// Outcomes follow docs/reliability.md: OK ok; INVALID_ARGUMENT and version
// mismatches fail (the mismatch carries current_version); any other error of
// a write is info and the client continues under a new proc; a failed read
// completes as fail (the checker leaves it out). After an error a client backs
// off, and a register client only reads until a read succeeds again.
#ifndef KVSTORE_TOOLS_KVFAULT_WORKLOAD_H_
#define KVSTORE_TOOLS_KVFAULT_WORKLOAD_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "tools/kvfault/cluster.h"
#include "tools/kvfault/history_recorder.h"

namespace kvstore::fault {

struct WorkloadSpec {
  std::string kind;  // "register", "set" or "replica-reads".
  int clients = 8;
  double rate = 250;  // Operations per second, over all its clients.
  int keys = 5;       // register, replica-reads: hot keys.
};

struct LoadOptions {
  std::vector<WorkloadSpec> workloads;
  absl::Duration duration = absl::Seconds(20);
  int64_t max_ops = 20000;  // Over all clients.
  absl::Duration request_timeout = absl::Seconds(2);
  uint64_t seed = 1;
  // "127.0.0.1:PORT" of each router; empty: the clients go to the leader.
  std::vector<std::string> routers;
};

// Counters of what the clients did (the checker recounts from the history).
struct LoadCounters {
  std::atomic<int64_t> ops{0}, ok{0}, fail{0}, info{0}, procs{0};
};

class Load {
 public:
  Load(Cluster* cluster, HistoryRecorder* history, LoadOptions options);
  Load(const Load&) = delete;
  Load& operator=(const Load&) = delete;

  // Runs every client until the duration has passed or max_ops are done;
  // returns when all have stopped.
  void Run();
  // Asks the clients to stop after their current operation.
  void Stop() { stop_.store(true); }

  // Several shard groups (shard_groups.h): CompareReplicas compares each
  // group's replicas on the keys they own. Default: only the constructor's.
  void set_groups(std::vector<Cluster*> groups) { groups_ = std::move(groups); }

  // Final reads (after healing): every key the load touched, read from the
  // leader with MultiGet (through the first router when there are routers:
  // it splits the keys per shard), each recorded as a get with
  // "phase":"final".
  // Keys whose read fails are tried again until `deadline`; the error names
  // how many were never read.
  absl::Status FinalReads(absl::Time deadline);

  // Compares each running replica's content (READ_MODE_ANY_REPLICA) with the
  // leader's final reads. Returns the number of differing keys over all
  // replicas, and describes the first few in *examples. With several groups
  // a replica refuses the keys of other shards (WRONG_SHARD, from its
  // ownership gate and the ring in etcd): those are skipped, and every key
  // must be compared on exactly one group's replicas.
  absl::StatusOr<int64_t> CompareReplicas(std::vector<std::string>* examples);

  // After CompareReplicas with several groups: the shard of every key
  // compared (as its replicas' ownership gates said).
  const std::map<std::string, std::string>& key_shards() const { return key_shards_; }

  const LoadCounters& counters() const { return counters_; }
  size_t keys_touched();

 private:
  struct Final {
    bool found = false;
    std::string value;
    uint64_t version = 0;
  };
  void Client(const WorkloadSpec& spec, char letter, int client, int clients_before,
              int64_t max_ops);
  int64_t NewProc() { return next_proc_.fetch_add(1) + 1; }
  void Touch(const std::string& key);

  Cluster* cluster_;
  std::vector<Cluster*> groups_;
  HistoryRecorder* history_;
  LoadOptions options_;
  LoadCounters counters_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> next_proc_{0};
  absl::Mutex mu_;
  std::set<std::string> keys_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<std::string, Final>> finals_;  // After FinalReads.
  std::map<std::string, std::string> key_shards_;      // After CompareReplicas.
};

}  // namespace kvstore::fault

#endif  // KVSTORE_TOOLS_KVFAULT_WORKLOAD_H_
