// A fault scenario, loaded from tests/fault/scenarios/NAME.yaml: the shard
// group, the servers' flags, the load, the nemesis schedule and what the
// checker must find. docs/reliability.md ("Running the suite") shows a file.
#ifndef KVSTORE_TOOLS_KVFAULT_SCENARIO_H_
#define KVSTORE_TOOLS_KVFAULT_SCENARIO_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/kvfault/workload.h"

namespace kvstore::fault {

// One nemesis step. Actions:
//   kill     kill -9 `node`                    pause / resume  kill -STOP / -CONT `node`
//   restart  start `node` again on its address, as `as` ("" = what it was,
//            "replica" = kv-replica on its data dir)
//   wipe     rm -rf the data dir of `node` (down)
//   promote  kvctl promote the most advanced of `candidates` (by last index),
//            pushing to `followers` ("others" = every other running node);
//            force "never" or "if-refused" (retry with --force after a refusal)
//   await-healed  poll until the leader serves and its running followers caught up
struct Step {
  double at_s = 0;      // Seconds after the load starts...
  double jitter_s = 0;  // ...plus a seeded uniform draw in [0, jitter_s).
  std::string action;
  std::string node;
  std::string as;
  std::vector<std::string> candidates;
  std::vector<std::string> followers;
  std::string force = "never";
};

struct Expect {
  // "zero" (lost must be 0) or "positive" (a control: lost must be > 0).
  std::string lost = "zero";
  // Violation kinds allowed besides lost-write (a control loses writes, which
  // also makes their keys non-linearizable).
  std::vector<std::string> allowed_violations;
  int64_t min_acked = 500;  // Fewer acked writes: the run proved nothing.
  bool replicas_equal = true;
};

struct Scenario {
  std::string name;
  std::string description;
  int replicas = 2;
  std::vector<std::string> server_flags;
  LoadOptions load;  // Seed left to the run.
  std::vector<Step> nemesis;
  Expect expect;
  int64_t check_time_limit_ms = 10000;  // Per key; past it the key is undecided.
  std::string path;
};

absl::StatusOr<Scenario> LoadScenario(const std::string& path);

}  // namespace kvstore::fault

#endif  // KVSTORE_TOOLS_KVFAULT_SCENARIO_H_
