// kvfault: the fault-injection driver (issue 15, docs/reliability.md).
//
//   kvfault run --scenario NAME|FILE.yaml [--seed S] [--out DIR] [--keep]
//               [--bin-dir DIR] [--scenario-dir DIR] [--server-flag F]... [--stop-gracefully]
//   kvfault powerloss DIR --journal J [--tear=none|prefix|zero-sector] [--seed S]
//   kvfault bitflip --file F [--offset N|random] [--seed S]
//   kvfault cleanup
//
// Starts one shard group on 127.0.0.1 under a run directory, runs the
// scenario's load and nemesis, heals, reads every key back, checks the
// history with kvcheck's library and prints the seed and the figures.
// Exit 0 when the scenario's expectations hold, 1 when not (the run
// directory is kept and its path printed), 2 on usage or set-up errors.
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/storage/version.h"
#include "nlohmann/json.hpp"
#include "tools/kvcheck/availability.h"
#include "tools/kvcheck/checker.h"
#include "tools/kvcheck/history.h"
#include "tools/kvcheck/summary.h"
#include "tools/kvfault/bit_flip.h"
#include "tools/kvfault/child_process.h"
#include "tools/kvfault/cluster.h"
#include "tools/kvfault/history_recorder.h"
#include "tools/kvfault/nemesis.h"
#include "tools/kvfault/nemesis_disk.h"
#include "tools/kvfault/nemesis_network.h"
#include "tools/kvfault/netns.h"
#include "tools/kvfault/network.h"
#include "tools/kvfault/power_loss.h"
#include "tools/kvfault/routers.h"
#include "tools/kvfault/scenario.h"
#include "tools/kvfault/workload.h"

namespace kvstore::fault {
namespace {

constexpr int kPass = 0;
constexpr int kFail = 1;
constexpr int kUsage = 2;
constexpr int kSkipped = 77;  // ctest's SKIP_RETURN_CODE for the fault tests.

constexpr char kHelp[] =
    "usage: kvfault run --scenario NAME|FILE.yaml [--seed S] [--out DIR] [--keep]\n"
    "                   [--bin-dir DIR] [--scenario-dir DIR] [--server-flag F]...\n"
    "                   [--stop-gracefully]\n"
    "Runs a fault scenario against real binaries on 127.0.0.1 and checks the history\n"
    "(docs/reliability.md, \"Running the suite\"). --seed replays the schedule, keys and\n"
    "values; --out: the run directory (default: a new one under $TMPDIR), removed when\n"
    "the run passes unless --keep. --server-flag appends F to every server's flags\n"
    "(after the scenario's, so it overrides them: --server-flag --ack=async).\n"
    "--stop-gracefully: after the checks, SIGTERM every running server and fail unless each\n"
    "exits with code 0 within 20 s (an ASan build's leak check runs then). A sanitizer\n"
    "report in any server log fails the run in any case. Exit: 0 pass, 1 the "
    "expectations failed, 2 usage or\n"
    "set-up error.\n"
    "\n"
    "usage: kvfault powerloss DIR --journal J [--tear=none|prefix|zero-sector] [--seed S]\n"
    "After a kill -9 of a process that ran under libkvfault_preload.so with\n"
    "KVFAULT_PRELOAD_DIR=DIR and KVFAULT_PRELOAD_JOURNAL=J: cuts DIR back to what its\n"
    "fsyncs made durable (docs/reliability.md, \"Power loss\").\n"
    "\n"
    "usage: kvfault bitflip --file F [--offset N|random] [--seed S]\n"
    "Flips one bit of F (the node must be stopped) and prints which.\n"
    "\n"
    "usage: kvfault cleanup\n"
    "Unmounts the tmpfs data dirs (<dir>/kvfault-*/nodes/*/data) a killed run left, and\n"
    "deletes the network namespaces kvf<R>-* of runs with no process left in them.\n";

struct Args {
  std::string scenario;
  std::string out;
  std::string bin_dir;
  std::string scenario_dir = KV_SCENARIO_DIR;
  uint64_t seed = 0;
  bool have_seed = false;
  bool keep = false;
  bool stop_gracefully = false;
  std::vector<std::string> server_flags;  // Appended to the scenario's.
};

int Usage(const std::string& why) {
  std::fprintf(stderr, "kvfault: %s\n%s", why.c_str(), kHelp);
  return kUsage;
}

std::string SelfDir() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "." : exe.parent_path().string();
}

std::string Seconds(int64_t ns) { return absl::StrFormat("%.2fs", ns / 1e9); }

// Time from each fault step to the first write invoked after it that
// succeeded and changed the key (a delete of an absent key writes nothing):
// how long writes were unavailable.
std::vector<std::string> RecoveryTimes(const check::History& h,
                                       const std::vector<StepRecord>& steps) {
  std::vector<std::string> out;
  for (const StepRecord& s : steps) {
    // A `net` step on etcd links (etcd mode): the failover it causes.
    const bool etcd_cut =
        s.action == "net" && absl::StrContains(s.node, "etcd") && !absl::EndsWith(s.node, " heal");
    if (s.action != "kill" && s.action != "pause" && s.action != "promote" &&
        s.action != "promote-race" && s.action != "powerloss" && s.action != "failpoint" &&
        s.action != "fill-disk" && !etcd_cut) {
      continue;
    }
    // A leader cut off from etcd acknowledges until its lease runs out: what
    // counts there is the first write of a newer epoch than any before.
    uint64_t epoch_before = 0;
    if (etcd_cut) {
      for (const check::Op& op : h.ops) {
        if (op.IsWrite() && op.outcome == check::Outcome::kOk && op.version != 0 &&
            op.complete_t_ns <= s.t_ns) {
          epoch_before = std::max(epoch_before, VersionEpoch(op.version));
        }
      }
    }
    int64_t first_ok = -1;
    for (const check::Op& op : h.ops) {
      if (op.IsWrite() && (op.f != check::Fn::kDelete || op.deleted) &&
          op.outcome == check::Outcome::kOk && op.invoke_t_ns >= s.t_ns &&
          (!etcd_cut || VersionEpoch(op.version) > epoch_before) &&
          (first_ok < 0 || op.complete_t_ns < first_ok)) {
        first_ok = op.complete_t_ns;
      }
    }
    out.push_back(
        absl::StrCat(s.action, " ", s.node, " at ", Seconds(s.t_ns), ": first ok write ",
                     etcd_cut ? "of a newer epoch " : "",
                     first_ok < 0 ? "never" : absl::StrCat("after ", Seconds(first_ok - s.t_ns))));
  }
  return out;
}

// Which nodes acknowledged writes in each leader epoch (the version's high
// bits), how many, and the epoch checks' verdicts: "1048577 n0 812, 1048578
// n1 640; one node per epoch: yes; stale-epoch acks 0".
std::string EpochFigures(const check::History& h, const std::map<std::string, int>& kinds) {
  std::map<uint64_t, std::map<std::string, int64_t>> acked;  // epoch -> node -> writes
  for (const check::Op& op : h.ops) {
    if (!op.IsWrite() || op.outcome != check::Outcome::kOk || op.version == 0) continue;
    ++acked[VersionEpoch(op.version)][op.node.empty() ? "?" : op.node];
  }
  std::vector<std::string> parts;
  for (const auto& [epoch, nodes] : acked) {
    std::vector<std::string> by;
    for (const auto& [node, n] : nodes) by.push_back(absl::StrCat(node, " ", n));
    parts.push_back(absl::StrCat(epoch, " ", absl::StrJoin(by, " + ")));
  }
  auto count = [&](const char* kind) {
    auto it = kinds.find(kind);
    return it == kinds.end() ? 0 : it->second;
  };
  return absl::StrCat(parts.empty() ? "none" : absl::StrJoin(parts, ", "),
                      "; one node per epoch: ", count("epoch-two-nodes") == 0 ? "yes" : "no",
                      "; stale-epoch acks ", count("stale-epoch-ack"));
}

// etcd mode: ok writes of an epoch completed after the leader watch had seen
// a newer epoch's leader serving: acknowledged by a leader after its
// successor began (a stale leader that did not fence itself). A lower bound
// on that, since the watch sees a new leader up to 100 ms late; the first
// few ops in *ops.
int64_t AckedAfterNewerEpoch(const check::History& h,
                             const std::map<uint64_t, Cluster::EpochSeen>& seen,
                             std::vector<int>* ops) {
  int64_t n = 0;
  for (const check::Op& op : h.ops) {
    if (!op.IsWrite() || op.outcome != check::Outcome::kOk || op.version == 0) continue;
    const uint64_t epoch = VersionEpoch(op.version);
    for (auto it = seen.upper_bound(epoch); it != seen.end(); ++it) {
      if (op.complete_t_ns > it->second.t_ns) {
        ++n;
        if (ops->size() < 5) ops->push_back(op.id);
        break;
      }
    }
  }
  return n;
}

std::string DescribeEpochsSeen(const std::map<uint64_t, Cluster::EpochSeen>& seen) {
  std::vector<std::string> parts;
  for (const auto& [epoch, s] : seen) {
    parts.push_back(absl::StrCat(epoch, " ", s.node, " at ", Seconds(s.t_ns)));
  }
  return parts.empty() ? "none" : absl::StrJoin(parts, ", ");
}

// Age of each lost write: from its acknowledgement to the first power cut
// after its invocation (the cut that lost it; the answer may reach the client
// just after the cut's timestamp, which counts as 0). Returns the oldest, or
// -1 if none is lost or no cut came after it.
double OldestLostAgeS(const check::History& h, const check::DurabilityFigures& d,
                      const std::vector<StepRecord>& steps) {
  double oldest = -1;
  for (int id : d.lost_ops) {
    const check::Op& op = h.ops[id];
    for (const StepRecord& s : steps) {
      if (s.action != "powerloss" || s.t_ns < op.invoke_t_ns) continue;
      oldest = std::max(oldest, std::max<int64_t>(0, s.t_ns - op.complete_t_ns) / 1e9);
      break;
    }
  }
  return oldest;
}

// Whether the servers in `bin_dir` were built with -DKV_FAULT_CONTROLS=ON:
// their --help lists the control flag.
int64_t ReplicaReadsFound(const check::History& h) {
  int64_t n = 0;
  for (const check::Op& r : h.replica_reads) n += r.outcome == check::Outcome::kOk && r.found;
  return n;
}

// Replica reads that found a value older than an ok set or CAS of the key
// completed before the read was invoked: the evidence that the reads reached
// replicas that lag (allowed; a leader read would be not-linearizable).
int64_t StaleReplicaReads(const check::History& h) {
  std::map<std::string, std::vector<std::pair<int64_t, uint64_t>>> writes;  // complete_pos, version
  for (const check::Op& op : h.ops) {
    if (op.WritesValue() && op.outcome == check::Outcome::kOk) {
      writes[op.key].push_back({op.complete_pos, op.version});
    }
  }
  int64_t stale = 0;
  for (const check::Op& r : h.replica_reads) {
    if (r.outcome != check::Outcome::kOk || !r.found) continue;
    for (const auto& [pos, version] : writes[r.key]) {
      if (pos < r.invoke_pos && version > r.version) {
        ++stale;
        break;
      }
    }
  }
  return stale;
}

// The steps that acted on `shard`'s nodes (every step when it is "", and
// steps that name no node, like a link pattern).
std::vector<StepRecord> ShardSteps(const std::vector<StepRecord>& steps, const std::string& shard) {
  if (shard.empty()) return steps;
  std::vector<StepRecord> out;
  for (const StepRecord& s : steps) {
    const bool other_node = s.node.size() > 1 && s.node[0] == 's' &&
                            std::isdigit(static_cast<unsigned char>(s.node[1])) &&
                            !absl::StartsWith(s.node, absl::StrCat(shard, "n"));
    if (!other_node) out.push_back(s);
  }
  return out;
}

// One shard's part of the run's fault windows: a window whose fault names a
// node of another shard ("kill s1n0") is left out; one that names no shard's
// node (a link pattern, etcd) counts for every shard.
std::vector<check::FaultWindow> ShardWindows(const std::vector<check::FaultWindow>& windows,
                                             const std::string& shard) {
  if (shard.empty()) return windows;
  std::vector<check::FaultWindow> out;
  for (const check::FaultWindow& w : windows) {
    bool other_node = false;
    for (absl::string_view token : absl::StrSplit(w.fault, absl::ByAnyChar(" ,<->"))) {
      if (token.size() > 1 && token[0] == 's' &&
          std::isdigit(static_cast<unsigned char>(token[1])) &&
          !absl::StartsWith(token, absl::StrCat(shard, "n"))) {
        other_node = true;
      }
    }
    if (!other_node) out.push_back(w);
  }
  return out;
}

// One history to check: the run's, or one shard's part of it.
struct OneCheck {
  std::string label;    // "" or "s1: " for failure messages.
  std::string heading;  // "" or " of shard s1".
  std::string path;
  std::string summary;
  Cluster* group;
};

// Writes <run>/history-<shard>.jsonl for each group, each line to its key's
// shard. Lines of keys of no known shard (a key no final read reached)
// would make a history of their own, so they are an error.
absl::Status SplitHistoryByShard(const std::string& run_dir, const std::vector<Cluster*>& groups,
                                 const std::map<std::string, std::string>& key_shards,
                                 std::vector<OneCheck>* checks) {
  std::map<std::string, std::ofstream> outs;
  for (Cluster* g : groups) {
    const std::string path = absl::StrCat(run_dir, "/history-", g->shard(), ".jsonl");
    outs[g->shard()].open(path);
    checks->push_back({absl::StrCat(g->shard(), ": "), absl::StrCat(" of shard ", g->shard()), path,
                       absl::StrCat(run_dir, "/summary-", g->shard(), ".json"), g});
  }
  std::ifstream in(run_dir + "/history.jsonl");
  std::string line;
  std::map<std::string, int64_t> unknown;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("key") || !j["key"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("not an event: ", line.substr(0, 200)));
    }
    auto it = key_shards.find(j["key"].get<std::string>());
    if (it == key_shards.end() || !outs.count(it->second)) {
      ++unknown[j["key"].get<std::string>()];
      continue;
    }
    outs[it->second] << line << "\n";
  }
  if (!unknown.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(unknown.size(), " keys of no known shard, e.g. ", unknown.begin()->first));
  }
  return absl::OkStatus();
}

bool ServersHaveControls(const std::string& bin_dir, const std::string& scratch) {
  for (const char* binary : {"kv-shard", "kv-replica"}) {
    absl::StatusOr<CommandResult> r =
        RunCommand({absl::StrCat(bin_dir, "/", binary), "--help"}, scratch, absl::Seconds(10));
    if (!r.ok() || r->output.find("unsafe_ack_before_fsync") == std::string::npos) return false;
  }
  return true;
}

// Runs the namespace network's commands (`ip`, `nft`), each to completion
// within 10 s; their output goes through `log_path`.
Netns::Runner CommandRunner(std::string log_path) {
  return [log_path](const std::vector<std::string>& argv) -> absl::StatusOr<std::string> {
    absl::StatusOr<CommandResult> r = RunCommand(argv, log_path, absl::Seconds(10));
    if (!r.ok()) return r.status();
    if (!r->status.exited || r->status.code != 0) {
      return absl::InternalError(
          absl::StrCat(r->status.ToString(), ": ", absl::StripAsciiWhitespace(r->output)));
    }
    return r->output;
  };
}

// `network: netns`: makes the run's namespaces and moves the driver into its
// own; an error of FAILED_PRECONDITION means the scenario cannot run here.
absl::StatusOr<std::unique_ptr<Netns>> PrepareNetns(int replicas, uint64_t seed,
                                                    const std::string& run_dir) {
  if (geteuid() != 0) {
    return absl::FailedPreconditionError("network: netns needs root (ip netns, nft)");
  }
  for (const char* tool : {"/usr/sbin/ip", "/usr/sbin/nft"}) {
    if (access(tool, X_OK) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(tool, " is missing (Debian packages iproute2, nftables)"));
    }
  }
  std::vector<std::string> nodes;
  for (int i = 0; i <= replicas; ++i) nodes.push_back(absl::StrCat("n", i));
  absl::StatusOr<std::unique_ptr<Netns>> netns =
      Netns::Create(nodes, seed, CommandRunner(run_dir + "/netns-command.log"));
  if (!netns.ok()) return netns.status();
  if (absl::Status s = (*netns)->EnterClient(); !s.ok()) return s;
  std::printf("  namespaces: kvf%d-{sw,cl,n0..n%d}, nodes at 127.100.%d.1-%d, driver at %s\n",
              (*netns)->run(), replicas, (*netns)->run(), replicas + 1,
              (*netns)->Address(kNetnsClient).c_str());
  return netns;
}

// Appends `commands` to the run's nemesis.jsonl (the teardown, after the
// nemesis is gone), in the nemesis's format.
void AppendNetnsLog(const std::string& path, const std::vector<NetnsCommand>& commands) {
  std::ofstream out(path, std::ios::app);
  for (const NetnsCommand& c : commands) {
    nlohmann::ordered_json j;
    j["step"] = -1;
    j["action"] = absl::StrCat("netns-", c.what);
    j["node"] = c.member;
    j["command"] = ShellQuote(c.argv);
    j["ok"] = c.status.ok();
    if (!c.status.ok()) j["error"] = std::string(c.status.message());
    out << j.dump() << "\n";
    if (!c.status.ok()) {
      std::printf("kvfault: %s: %s\n", ShellQuote(c.argv).c_str(),
                  std::string(c.status.message()).c_str());
    }
  }
}

int Run(const Args& args) {
  std::string path = args.scenario;
  if (!absl::EndsWith(path, ".yaml")) path = absl::StrCat(args.scenario_dir, "/", path, ".yaml");
  absl::StatusOr<Scenario> scenario = LoadScenario(path);
  if (!scenario.ok()) return Usage(std::string(scenario.status().message()));
  scenario->server_flags.insert(scenario->server_flags.end(), args.server_flags.begin(),
                                args.server_flags.end());
  if (scenario->requires_controls) {
    const std::string bin_dir = args.bin_dir.empty() ? SelfDir() : args.bin_dir;
    char scratch[] = "/tmp/kvfault-help-XXXXXX";
    const int fd = mkstemp(scratch);
    if (fd >= 0) close(fd);
    const bool have = fd >= 0 && ServersHaveControls(bin_dir, scratch);
    if (fd >= 0) unlink(scratch);
    if (!have) {
      std::printf(
          "SKIPPED %s: built without KV_FAULT_CONTROLS (configure with "
          "-DKV_FAULT_CONTROLS=ON for --unsafe-ack-before-fsync)\n",
          scenario->name.c_str());
      return kSkipped;
    }
  }
  const uint64_t seed = args.have_seed ? args.seed : std::random_device()() % 1000000000;
  std::printf(
      "kvfault: scenario %s, seed %llu\n  %s\n  replay: kvfault run --scenario %s --seed %llu\n",
      scenario->name.c_str(), static_cast<unsigned long long>(seed), scenario->description.c_str(),
      scenario->name.c_str(), static_cast<unsigned long long>(seed));
  for (const std::string& f : args.server_flags) std::printf("  --server-flag %s\n", f.c_str());
  std::fflush(stdout);

  std::string run_dir = args.out;
  if (run_dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        absl::StrCat(tmp && *tmp ? tmp : "/tmp", "/kvfault-", scenario->name, "-", seed, "-XXXXXX");
    if (mkdtemp(pattern.data()) == nullptr) return Usage("cannot create the run directory");
    run_dir = pattern;
  } else {
    std::filesystem::create_directories(run_dir);
  }
  std::printf("  run directory: %s\n", run_dir.c_str());
  std::filesystem::copy_file(path, run_dir + "/scenario.yaml",
                             std::filesystem::copy_options::overwrite_existing);

  // Before the cluster and before any thread starts: the driver moves into
  // the run's client namespace (netns.h). Torn down after the cluster's
  // processes are gone, or on any return.
  std::unique_ptr<Netns> netns;
  if (scenario->netns) {
    absl::StatusOr<std::unique_ptr<Netns>> n = PrepareNetns(scenario->replicas, seed, run_dir);
    if (!n.ok() && absl::IsFailedPrecondition(n.status())) {
      std::printf("SKIPPED %s: %s\n", scenario->name.c_str(),
                  std::string(n.status().message()).c_str());
      if (args.out.empty()) {
        std::error_code ec;
        std::filesystem::remove_all(run_dir, ec);  // Nothing ran: nothing to keep.
      }
      return kSkipped;
    }
    if (!n.ok()) return Usage(absl::StrCat("network namespaces: ", n.status().message()));
    netns = std::move(*n);
  }

  bool passed = false;
  std::vector<std::string> failures;
  {
    ClusterOptions co;
    co.run_dir = run_dir;
    co.bin_dir = args.bin_dir.empty() ? SelfDir() : args.bin_dir;
    co.replicas = scenario->replicas;
    co.server_flags = scenario->server_flags;
    // Declared before the cluster, so its mounts go after the processes.
    struct Unmount {
      std::vector<std::string> mounts;
      ~Unmount() { ReleaseDiskFaults(mounts); }
    } unmount;
    // The proxies outlive the cluster: its processes die first.
    std::unique_ptr<Network> network;
    if (scenario->proxies) network = std::make_unique<Network>(seed);
    co.network = network.get();
    co.etcd = scenario->etcd;
    co.lease_ttl = scenario->lease_ttl;
    co.netns = netns.get();
    if (scenario->shards > 1) co.node_prefix = "s0";  // s0n0, s0n1, ...
    Cluster cluster(co);
    for (const std::string& name : scenario->preload) {
      for (Node* n : cluster.nodes()) {
        if (name == "all" || name == n->name()) n->preload = true;
      }
    }
    if (absl::Status s = PrepareDiskFaults(*scenario, &cluster, &unmount.mounts); !s.ok()) {
      if (absl::IsFailedPrecondition(s)) {
        std::printf("SKIPPED %s: %s\n", scenario->name.c_str(), std::string(s.message()).c_str());
        return kSkipped;
      }
      return Usage(std::string(s.message()));
    }
    HistoryRecorder history;
    if (absl::Status s = history.Open(run_dir + "/history.jsonl"); !s.ok()) {
      return Usage(std::string(s.message()));
    }
    cluster.set_clock(&history);
    // Several shards: the other groups on the first one's etcd, one
    // `kvctl cluster init` naming them all (declared after the cluster, so
    // killed before its etcd).
    std::vector<std::unique_ptr<Cluster>> more_groups;
    std::vector<Cluster*> groups = {&cluster};
    absl::Status started;
    if (scenario->shards == 1) {
      started = cluster.Start();
    } else {
      const absl::Time deadline = absl::Now() + absl::Seconds(30);
      started = cluster.StartNodes();
      for (int k = 1; k < scenario->shards && started.ok(); ++k) {
        ClusterOptions gk = co;
        gk.shard = gk.node_prefix = absl::StrCat("s", k);
        gk.shared_etcd = cluster.etcd_endpoint();
        more_groups.push_back(std::make_unique<Cluster>(gk));
        Cluster* g = more_groups.back().get();
        for (const std::string& name : scenario->preload) {
          for (Node* n : g->nodes()) {
            if (name == "all" || name == n->name()) n->preload = true;
          }
        }
        g->set_clock(&history);
        groups.push_back(g);
        started = g->StartNodes();
      }
      if (started.ok()) started = cluster.InitEtcd(groups, deadline);
      for (Cluster* g : groups) {
        if (started.ok()) started = g->AwaitElected(deadline);
      }
    }
    if (!started.ok()) {
      std::string tails;
      for (Cluster* g : groups) tails += g->LogTails();
      std::printf("kvfault: the cluster did not start: %s\n%s\n  kept: %s\n",
                  std::string(started.message()).c_str(), tails.c_str(), run_dir.c_str());
      return kUsage;
    }
    // Declared after the cluster, so destroyed (killed) before its etcd.
    std::unique_ptr<Routers> routers;
    if (scenario->routers > 0) {
      RoutersOptions ro;
      ro.run_dir = run_dir;
      ro.bin_dir = co.bin_dir;
      ro.etcd_endpoint = cluster.etcd_endpoint();
      ro.count = scenario->routers;
      ro.lease_ttl = scenario->lease_ttl;
      routers = std::make_unique<Routers>(ro);
      if (absl::Status s = routers->Start(absl::Now() + absl::Seconds(30)); !s.ok()) {
        std::printf("kvfault: the routers did not start: %s\n  kept: %s\n",
                    std::string(s.message()).c_str(), run_dir.c_str());
        return kUsage;
      }
      std::printf("  routers: %s\n", absl::StrJoin(routers->addresses(), ", ").c_str());
    }
    LoadOptions lo = scenario->load;
    lo.seed = seed;
    if (routers != nullptr) lo.routers = routers->addresses();
    Load load(&cluster, &history, lo);
    load.set_groups(groups);
    Nemesis nemesis(&cluster, &history, run_dir + "/nemesis.jsonl", seed);
    if (netns != nullptr) nemesis.LogNetns(-1, netns->history(), "");
    nemesis.set_groups(groups);
    std::atomic<bool> cancelled{false};
    const absl::Time load_start = absl::Now();
    // The load runs on its own thread and the nemesis on this one: children
    // get SIGKILL when the thread that spawned them ends (PR_SET_PDEATHSIG
    // follows the thread), so every process is started from the main thread.
    std::thread load_thread([&] {
      load.Run();
      cancelled.store(true);
    });
    const absl::Status nemesis_status = nemesis.Run(scenario->nemesis, load_start, &cancelled);
    if (!nemesis_status.ok()) load.Stop();
    load_thread.join();
    const int64_t load_ns = history.NowNs();
    if (!nemesis_status.ok()) failures.push_back(std::string(nemesis_status.message()));

    // Heal, read everything back, compare the replicas.
    int64_t replica_diffs = -1;
    int64_t full_resyncs = -1;
    std::string full_resync_detail;
    std::vector<std::string> diff_examples;
    if (failures.empty()) {
      if (absl::Status s = nemesis.Heal(absl::Now() + absl::Seconds(15)); !s.ok()) {
        failures.push_back(absl::StrCat("heal: ", s.message()));
      }
    }
    if (failures.empty()) {
      if (absl::Status s = load.FinalReads(absl::Now() + absl::Seconds(10)); !s.ok()) {
        failures.push_back(absl::StrCat("final reads: ", s.message()));
      }
      // A replica that does not consider itself caught up answers UNAVAILABLE:
      // poll with a deadline rather than judge it then.
      absl::StatusOr<int64_t> d = absl::UnavailableError("not compared");
      const absl::Time compare_deadline = absl::Now() + absl::Seconds(10);
      while (true) {
        diff_examples.clear();
        d = load.CompareReplicas(&diff_examples);
        if (d.ok() || absl::Now() >= compare_deadline) break;
        absl::SleepFor(absl::Milliseconds(100));  // Polling with a deadline.
      }
      if (d.ok()) {
        replica_diffs = *d;
      } else {
        failures.push_back(absl::StrCat("replica comparison: ", d.status().message()));
      }
      if (scenario->proxies || scenario->expect.min_full_resyncs > 0) {
        absl::StatusOr<int64_t> n = FullResyncs(&cluster, &full_resync_detail);
        if (n.ok()) {
          full_resyncs = *n;
        } else {
          failures.push_back(absl::StrCat("full resyncs: ", n.status().message()));
        }
      }
    }
    if (absl::Status s = history.Close(); !s.ok()) failures.push_back(std::string(s.message()));

    // Check.
    // With several shards, one history per shard (by each key's shard, as
    // its replicas' ownership gates said): epochs are per shard, so the
    // per-epoch checks must not mix them; keys are independent anyway.
    std::vector<OneCheck> checks;
    if (groups.size() == 1) {
      checks.push_back({"", "", run_dir + "/history.jsonl", run_dir + "/summary.json", &cluster});
    } else if (absl::Status s = SplitHistoryByShard(run_dir, groups, load.key_shards(), &checks);
               !s.ok()) {
      failures.push_back(absl::StrCat("splitting the history per shard: ", s.message()));
    }
    // The fault windows, for the availability during faults.
    absl::StatusOr<std::vector<check::FaultWindow>> windows =
        check::ReadFaultWindows(run_dir + "/nemesis.jsonl");
    if (!windows.ok()) {
      failures.push_back(absl::StrCat("nemesis log: ", windows.status().message()));
    }
    int64_t total_acked = 0, total_lost = 0;
    for (const OneCheck& one : checks) {
      absl::StatusOr<check::History> h = check::ReadHistoryFile(one.path);
      if (!h.ok()) {
        failures.push_back(
            absl::StrCat(one.label, "kvcheck refused the history: ", h.status().message()));
      } else {
        check::CheckOptions options;
        options.search.time_limit_ms = scenario->check_time_limit_ms;
        if (windows.ok()) {
          options.fault_windows =
              ShardWindows(*windows, groups.size() > 1 ? one.group->shard() : "");
        }
        const absl::Time check_start = absl::Now();
        const check::Report report = check::Check(*h, options);
        const double check_s = absl::ToDoubleSeconds(absl::Now() - check_start);
        {
          std::ofstream summary(one.summary);
          summary << check::SummaryJson(*h, report);
        }
        const auto& d = report.durability;
        int64_t invalid = 0, unknown = 0;
        for (const auto& [key, r] : report.keys) {
          invalid += r.verdict == check::Verdict::kInvalid;
          unknown += r.verdict == check::Verdict::kUnknown;
        }
        int64_t ok = 0, fail = 0, info = 0;
        for (const auto& [f, by] : report.ops) {
          for (const auto& [outcome, n] : by) {
            (outcome == "ok" ? ok : outcome == "fail" ? fail : info) += n;
          }
        }
        std::map<std::string, int> kinds;
        for (const auto& v : report.violations) ++kinds[check::ViolationKindName(v.kind)];
        std::printf("figures%s (seed %llu, %.1fs of load, check %.2fs):\n", one.heading.c_str(),
                    static_cast<unsigned long long>(seed), load_ns / 1e9, check_s);
        std::printf("  ops %lld (ok %lld, fail %lld, info %lld), procs %lld, keys %zu\n",
                    static_cast<long long>(ok + fail + info), static_cast<long long>(ok),
                    static_cast<long long>(fail), static_cast<long long>(info),
                    static_cast<long long>(load.counters().procs.load()), report.keys.size());
        std::printf(
            "  acked %lld  lost %lld  recovered %lld  phantom %lld  (acked without final read "
            "%lld)\n",
            static_cast<long long>(d.acked), static_cast<long long>(d.lost),
            static_cast<long long>(d.recovered), static_cast<long long>(d.phantom),
            static_cast<long long>(d.acked_without_final_read));
        std::printf("  linearizable: %zu keys, %lld invalid, %lld unknown\n", report.keys.size(),
                    static_cast<long long>(invalid), static_cast<long long>(unknown));
        if (!h->replica_reads.empty()) {
          const auto& by = report.ops.at("read-any");
          auto n = [&by](const char* o) {
            auto it = by.find(o);
            return static_cast<long long>(it == by.end() ? 0 : it->second);
          };
          std::printf("  replica reads: %lld ok (%lld found a value, %lld stale), %lld failed\n",
                      n("ok"), static_cast<long long>(ReplicaReadsFound(*h)),
                      static_cast<long long>(StaleReplicaReads(*h)), n("fail") + n("info"));
        }
        std::printf("  replicas equal: %s\n",
                    replica_diffs < 0 ? "not compared"
                    : replica_diffs == 0
                        ? "yes"
                        : absl::StrCat("no, ", replica_diffs, " keys differ").c_str());
        for (const std::string& e : diff_examples) std::printf("    %s\n", e.c_str());
        std::printf("  epochs: %s\n", EpochFigures(*h, kinds).c_str());
        int64_t after_newer = -1;
        if (one.group->etcd_mode()) {
          std::vector<int> ops;
          after_newer = AckedAfterNewerEpoch(*h, one.group->epochs_seen(), &ops);
          std::vector<std::string> ids;
          for (int id : ops) ids.push_back(absl::StrCat(h->ops[id].invoke_i));
          std::printf(
              "  elected (first seen by the leader watch): %s; acked after a newer epoch led: "
              "%lld%s\n",
              DescribeEpochsSeen(one.group->epochs_seen()).c_str(),
              static_cast<long long>(after_newer),
              ids.empty() ? ""
                          : absl::StrCat(" (invoke i=", absl::StrJoin(ids, ", "), ")").c_str());
          if (after_newer > 0) {
            failures.push_back(absl::StrCat(after_newer,
                                            " write(s) acknowledged in an epoch after a newer "
                                            "epoch's leader was seen serving"));
          }
        }
        for (const std::string& r : RecoveryTimes(
                 *h, ShardSteps(nemesis.done(), groups.size() > 1 ? one.group->shard() : ""))) {
          std::printf("  %s\n", r.c_str());
        }
        if (report.availability.has_value()) {
          for (const std::string& line : check::AvailabilityLines(*report.availability, "  ")) {
            std::printf("%s\n", line.c_str());
          }
        }
        std::printf("  stale leader reads: %lld; reads behind a lost write: %lld\n",
                    static_cast<long long>(report.StaleReads()),
                    static_cast<long long>(report.ReadsBehindLostWrites()));
        const IsolationFigures isolation = ComputeIsolation(*h, d, nemesis.isolation(), load_ns);
        if (isolation.windows > 0) {
          std::printf(
              "  leader isolated: %lld window(s), %.1fs; writes acknowledged inside: %lld, of them "
              "lost %lld%s\n",
              static_cast<long long>(isolation.windows), isolation.seconds,
              static_cast<long long>(isolation.acked), static_cast<long long>(isolation.lost),
              isolation.acked > 0 ? absl::StrFormat(" (lost-ack rate %.1f %%)",
                                                    100.0 * isolation.lost / isolation.acked)
                                        .c_str()
                                  : "");
        }
        if (full_resyncs >= 0 && one.group == groups.front()) {  // The first group's.
          std::printf("  full resyncs: %lld (%s)\n", static_cast<long long>(full_resyncs),
                      full_resync_detail.c_str());
        }
        if (network != nullptr && one.group == groups.front()) {  // The links are the run's.
          for (const std::string& link : network->links()) {
            std::printf("  link %s: %s\n", link.c_str(), network->Describe(link).c_str());
          }
        }
        const double lost_age_s = OldestLostAgeS(*h, d, nemesis.done());
        if (lost_age_s >= 0) {
          std::printf("  oldest lost write: acknowledged %.3fs before the power cut\n", lost_age_s);
        }
        std::printf(
            "  violations: %s\n",
            kinds.empty() ? "none" : absl::StrJoin(kinds, ", ", absl::PairFormatter(": ")).c_str());

        // The expectations.
        total_acked += d.acked;
        if (scenario->expect.lost == "zero" && d.lost != 0) {
          failures.push_back(absl::StrCat(one.label, d.lost, " acknowledged writes lost"));
        }
        total_lost += d.lost;
        if (scenario->expect.max_lost_age_s >= 0 && lost_age_s > scenario->expect.max_lost_age_s) {
          failures.push_back(absl::StrFormat(
              "a lost write was acknowledged %.3fs before the power cut (allowed: %.3fs)",
              lost_age_s, scenario->expect.max_lost_age_s));
        }
        for (const auto& [kind, n] : kinds) {
          const bool allowed = (kind == "lost-write" && scenario->expect.lost != "zero") ||
                               std::count(scenario->expect.allowed_violations.begin(),
                                          scenario->expect.allowed_violations.end(), kind) > 0;
          if (!allowed)
            failures.push_back(absl::StrCat(one.label, n, " violation(s) of kind ", kind));
        }
        if (scenario->expect.acked_while_isolated == "zero" && isolation.acked > 0) {
          std::vector<std::string> ids;
          for (int id : isolation.acked_ops) ids.push_back(absl::StrCat(h->ops[id].invoke_i));
          failures.push_back(
              absl::StrCat(isolation.acked,
                           " write(s) acknowledged while the leader was cut off from every "
                           "follower (invoke i=",
                           absl::StrJoin(ids, ", "), ")"));
        }
        if (isolation.windows == 0 && scenario->expect.acked_while_isolated == "zero") {
          failures.push_back("the leader was never isolated: the run proved nothing");
        }
        if (scenario->expect.min_full_resyncs > 0 &&
            full_resyncs < scenario->expect.min_full_resyncs) {
          failures.push_back(absl::StrCat(full_resyncs, " full resync(s), expected at least ",
                                          scenario->expect.min_full_resyncs));
        }

        if (!report.violations.empty()) {
          const auto& v = report.violations.front();
          std::printf("  first violation: %s [%s] %s\n    explain: kvcheck --explain %s %s\n",
                      check::ViolationKindName(v.kind), v.key.c_str(),
                      v.message.substr(0, 400).c_str(), v.key.c_str(), one.path.c_str());
        }
      }
    }
    if (scenario->expect.lost == "positive" && total_lost == 0) {
      failures.push_back("control: no write lost, but this scenario must lose some");
    }
    if (scenario->expect.replicas_equal && replica_diffs != 0) {
      failures.push_back("the replicas differ from the leader");
    }
    if (total_acked < scenario->expect.min_acked) {
      failures.push_back(absl::StrCat("only ", total_acked, " acked writes (expected at least ",
                                      scenario->expect.min_acked, "): the run proved nothing"));
    }
    if (args.stop_gracefully) {
      // After the checks, so a slow shutdown cannot touch the history.
      if (routers != nullptr) {
        if (absl::Status s = routers->StopAll(absl::Now() + absl::Seconds(20)); !s.ok()) {
          failures.push_back(absl::StrCat("graceful stop of the routers: ", s.message()));
        }
      }
      for (Cluster* g : groups) {
        if (absl::Status s = g->StopAll(absl::Now() + absl::Seconds(20)); !s.ok()) {
          failures.push_back(absl::StrCat("graceful stop: ", s.message()));
        }
      }
    }
    for (Cluster* g : groups) {
      for (const std::string& report : g->SanitizerReports()) {
        failures.push_back(absl::StrCat("sanitizer report in ", report));
      }
    }
    if (!failures.empty()) {
      for (Cluster* g : groups) std::printf("%s", g->LogTails(800).c_str());
      if (routers != nullptr) std::printf("%s", routers->LogTails(800).c_str());
    }
    passed = failures.empty();
  }  // The cluster's processes are killed and reaped here.
  if (netns != nullptr) {
    std::vector<NetnsCommand> ran;
    if (absl::Status s = netns->Teardown(&ran); !s.ok()) {
      failures.push_back(absl::StrCat("namespace teardown: ", s.message()));
      passed = false;
    }
    AppendNetnsLog(run_dir + "/nemesis.jsonl", ran);
    netns.reset();
  }

  if (passed) {
    std::printf("PASS %s (seed %llu)\n", scenario->name.c_str(),
                static_cast<unsigned long long>(seed));
    if (!args.keep && args.out.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(run_dir, ec);
    }
    return kPass;
  }
  std::printf("FAIL %s (seed %llu):\n", scenario->name.c_str(),
              static_cast<unsigned long long>(seed));
  for (const std::string& f : failures) std::printf("  - %s\n", f.c_str());
  std::printf("  kept: %s (history.jsonl, nemesis.jsonl, summary.json, nodes/*/ logs and data)\n",
              run_dir.c_str());
  return kFail;
}

// "--name=value" or "--name value" at argv[*i]; advances *i past it.
bool FlagValue(int argc, char** argv, int* i, const std::string& name, std::string* value) {
  const std::string a = argv[*i];
  if (absl::StartsWith(a, name + "=")) {
    *value = a.substr(name.size() + 1);
    return true;
  }
  if (a == name && *i + 1 < argc) {
    *value = argv[++*i];
    return true;
  }
  return false;
}

int PowerLossCommand(int argc, char** argv) {
  PowerLossOptions o;
  std::string v;
  for (int i = 2; i < argc; ++i) {
    if (FlagValue(argc, argv, &i, "--journal", &v)) {
      o.journal = v;
    } else if (FlagValue(argc, argv, &i, "--tear", &v)) {
      absl::StatusOr<Tear> tear = ParseTear(v);
      if (!tear.ok()) return Usage(std::string(tear.status().message()));
      o.tear = *tear;
    } else if (FlagValue(argc, argv, &i, "--seed", &v)) {
      if (!absl::SimpleAtoi(v, &o.seed)) return Usage("--seed needs a number");
    } else if (argv[i][0] != '-' && o.dir.empty()) {
      o.dir = argv[i];
    } else {
      return Usage(absl::StrCat("powerloss: unknown argument ", argv[i]));
    }
  }
  if (o.dir.empty() || o.journal.empty()) return Usage("powerloss needs DIR and --journal");
  absl::StatusOr<PowerLossReport> r = PowerLoss(o);
  if (!r.ok()) {
    std::fprintf(stderr, "kvfault powerloss: %s\n", std::string(r.status().message()).c_str());
    return kFail;
  }
  for (const std::string& a : r->actions) std::printf("  %s\n", a.c_str());
  for (const std::string& u : r->unrestorable) std::printf("  NOT restorable: %s\n", u.c_str());
  std::printf("powerloss %s: %s\n", o.dir.c_str(), r->Summary().c_str());
  return r->unrestorable.empty() ? kPass : kFail;
}

int BitFlipCommand(int argc, char** argv) {
  std::string file;
  std::optional<int64_t> offset;
  uint64_t seed = std::random_device()();
  std::string v;
  for (int i = 2; i < argc; ++i) {
    if (FlagValue(argc, argv, &i, "--file", &v)) {
      file = v;
    } else if (FlagValue(argc, argv, &i, "--offset", &v)) {
      int64_t n = 0;
      if (v == "random") {
        offset.reset();
      } else if (absl::SimpleAtoi(v, &n)) {
        offset = n;
      } else {
        return Usage("--offset needs a number or random");
      }
    } else if (FlagValue(argc, argv, &i, "--seed", &v)) {
      if (!absl::SimpleAtoi(v, &seed)) return Usage("--seed needs a number");
    } else {
      return Usage(absl::StrCat("bitflip: unknown argument ", argv[i]));
    }
  }
  if (file.empty()) return Usage("bitflip needs --file");
  absl::StatusOr<BitFlip> flip = FlipBit(file, offset, seed);
  if (!flip.ok()) {
    std::fprintf(stderr, "kvfault bitflip: %s\n", std::string(flip.status().message()).c_str());
    return kFail;
  }
  std::printf("%s (seed %llu)\n", flip->ToString().c_str(), static_cast<unsigned long long>(seed));
  return kPass;
}

}  // namespace
}  // namespace kvstore::fault

int main(int argc, char** argv) {
  using kvstore::fault::Args;
  using kvstore::fault::Usage;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc < 2) return Usage("a command is needed");
  const std::string command = argv[1];
  if (command == "-h" || command == "--help") {
    std::fputs(kvstore::fault::kHelp, stdout);
    return 0;
  }
  if (command == "powerloss") return kvstore::fault::PowerLossCommand(argc, argv);
  if (command == "bitflip") return kvstore::fault::BitFlipCommand(argc, argv);
  if (command == "cleanup") {
    const int mounts = kvstore::fault::CleanupCommand();
    char scratch[] = "/tmp/kvfault-cleanup-XXXXXX";
    const int fd = mkstemp(scratch);
    if (fd < 0) return kvstore::fault::Usage("cannot create a scratch file");
    close(fd);
    int failed = 0;
    const int removed = access("/usr/sbin/ip", X_OK) != 0
                            ? 0
                            : kvstore::fault::CleanupNetns(kvstore::fault::CommandRunner(scratch),
                                                           "/usr/sbin/ip", &failed);
    unlink(scratch);
    std::printf("kvfault cleanup: %d network namespace(s) deleted\n", removed);
    return mounts != 0 || failed != 0 ? 1 : 0;
  }
  if (command != "run") return Usage(absl::StrCat("unknown command ", command));
  Args args;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](std::string* v) {
      if (i + 1 >= argc) return false;
      *v = argv[++i];
      return true;
    };
    std::string v;
    if (a == "--scenario") {
      if (!value(&args.scenario)) return Usage("--scenario needs a name");
    } else if (a == "--seed") {
      if (!value(&v) || !absl::SimpleAtoi(v, &args.seed)) return Usage("--seed needs a number");
      args.have_seed = true;
    } else if (a == "--out") {
      if (!value(&args.out)) return Usage("--out needs a directory");
    } else if (a == "--bin-dir") {
      if (!value(&args.bin_dir)) return Usage("--bin-dir needs a directory");
    } else if (a == "--scenario-dir") {
      if (!value(&args.scenario_dir)) return Usage("--scenario-dir needs a directory");
    } else if (a == "--keep") {
      args.keep = true;
    } else if (a == "--stop-gracefully") {
      args.stop_gracefully = true;
    } else if (a == "--server-flag") {
      if (!value(&v)) return Usage("--server-flag needs a flag");
      args.server_flags.push_back(v);
    } else {
      return Usage(absl::StrCat("unknown argument ", a));
    }
  }
  if (args.scenario.empty()) return Usage("--scenario is required");
  kvstore::fault::InstallSignalCleanup();
  return kvstore::fault::Run(args);
}
