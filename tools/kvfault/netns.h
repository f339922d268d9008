// A fault run's own network (scenario `network: netns`; issue 15 "Partition",
// docs/reliability.md "Network faults"): network namespaces joined by a
// bridge, so partitions and packet loss are real drops by the kernel.
//   kvf<R>-sw   the switch: bridge br0 and one veth end per member (v-<name>)
//   kvf<R>-<n>  one per node: lo up, eth0 at 127.100.<R>.<k+1>/16 (node k)
//   kvf<R>-cl   the driver's: eth0 at 127.100.<R>.250/16
// <R> (1..254) is the run number, claimed by creating kvf<R>-sw (which fails
// when another run holds it). In every member namespace route_localnet=1
// (else the kernel treats 127/8 on eth0 as martian and connect() fails with
// EINVAL) and the local route 127.0.0.0/8 on lo is deleted (else every
// 127.100 address is local and a connect to another node meets its own
// namespace's lo: ECONNREFUSED). Nothing is done in the root namespace.
//
// The driver moves its own process into kvf<R>-cl before it starts any
// thread (EnterClient), so every socket it makes there (clients, Admin
// calls, kvctl, final reads) reaches the nodes at their 127.100 addresses;
// nodes start under `ip netns exec kvf<R>-<n>` (Wrap).
//
// Faults are nft tables named kvf<R> (family inet, one input chain) in the
// receiving namespaces, rebuilt atomically from the whole fault state by one
// `nft` command per namespace whose rules changed; drops are on input, at the
// receiver, so packets leave the sender's stack and vanish on the way, as in a
// real partition. Heal deletes the tables.
//
// Teardown (the destructor) deletes every namespace this object created,
// also after a failed Create; `kvfault cleanup` (CleanupNetns) deletes the
// namespaces of runs whose processes are all gone.
//
// Not thread-safe: the driver's main thread is the only caller.
#ifndef KVSTORE_TOOLS_KVFAULT_NETNS_H_
#define KVSTORE_TOOLS_KVFAULT_NETNS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvstore::fault {

// The name of the driver's member (its namespace kvf<R>-cl).
inline constexpr char kNetnsClient[] = "client";

// The faults of a run's namespaces, as a state (each step changes it and the
// tables follow it).
struct NetnsFaults {
  // (from, to): packets from node `from` to node `to` are dropped.
  std::set<std::pair<std::string, std::string>> blocked;
  // node -> percent of its packets dropped, both ways, at random.
  std::map<std::string, int> loss_percent;
  bool healthy() const { return blocked.empty() && loss_percent.empty(); }
  // "n0->n1, n1->n0; loss n2 20%", or "healthy".
  std::string ToString() const;
};

// A command run by the namespace network: its argv, and how it went.
struct NetnsCommand {
  std::string what;  // "setup", "teardown", "nft"...
  std::string member;
  std::vector<std::string> argv;
  absl::Status status;
};

class Netns {
 public:
  // Runs argv (argv[0] a path) to completion and returns what it printed; a
  // non-zero exit is an error carrying the output.
  using Runner = std::function<absl::StatusOr<std::string>(const std::vector<std::string>& argv)>;

  // Pure naming, for the unit tests and CleanupNetns.
  static std::string NamespaceName(int run, const std::string& member);
  static std::string TableName(int run) { return "kvf" + std::to_string(run); }

  // Claims a run number (the first free one from 1 + hint % 254), then
  // makes the switch, one namespace per node (names in order: node k gets
  // .k+1) and the client's. On any failure, what was made is deleted again.
  // FAILED_PRECONDITION when `ip netns add` itself fails (no privilege, no
  // namespaces): the caller reports the scenario skipped.
  static absl::StatusOr<std::unique_ptr<Netns>> Create(const std::vector<std::string>& nodes,
                                                       uint64_t hint, Runner runner,
                                                       std::string ip = "/usr/sbin/ip",
                                                       std::string nft = "/usr/sbin/nft");
  ~Netns();  // Teardown().
  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;

  // The commands Create would run for `nodes` in run `run`, in order.
  static std::vector<NetnsCommand> SetupCommands(int run, const std::vector<std::string>& nodes,
                                                 const std::string& ip);

  // Moves this process into the client's namespace. Fails unless the process
  // has exactly one thread (setns changes only the calling thread; threads
  // started later inherit it).
  absl::Status EnterClient();

  int run() const { return run_; }
  std::string Namespace(const std::string& member) const { return NamespaceName(run_, member); }
  // 127.100.<R>.<k+1> for node k, .250 for the client; "" for a stranger.
  std::string Address(const std::string& member) const;
  // `ip netns exec kvf<R>-<node> argv...`.
  std::vector<std::string> Wrap(const std::string& node,
                                const std::vector<std::string>& argv) const;

  // The nft script (one command line argument) that makes `member`'s table
  // for `faults`; "" when it needs none.
  std::string Script(const std::string& member, const NetnsFaults& faults) const;
  // Makes the tables follow `faults`: one nft command in each namespace whose
  // script changed (`nft delete table` where none is needed any more).
  // Returns the commands run; stops at the first that fails.
  absl::Status Apply(const NetnsFaults& faults, std::vector<NetnsCommand>* ran);
  const NetnsFaults& faults() const { return faults_; }
  // Whether `a` and `b` cannot talk over TCP: either direction is blocked.
  bool Cut(const std::string& a, const std::string& b) const;

  // Deletes every namespace made here (nodes, client, switch last); the veth
  // pairs, the bridge and the nft tables go with them. Idempotent.
  absl::Status Teardown(std::vector<NetnsCommand>* ran = nullptr);

  // Every command run so far (setup, faults, teardown), for the log.
  const std::vector<NetnsCommand>& history() const { return history_; }

 private:
  Netns(int run, std::vector<std::string> nodes, Runner runner, std::string ip, std::string nft);
  absl::Status Run(NetnsCommand command, std::vector<NetnsCommand>* ran);

  const int run_;
  const std::vector<std::string> nodes_;
  const Runner runner_;
  const std::string ip_;
  const std::string nft_;
  std::vector<std::string> made_;               // Namespaces, in the order made.
  std::map<std::string, std::string> scripts_;  // Member -> its table's script now.
  NetnsFaults faults_;
  std::vector<NetnsCommand> history_;
};

// The run namespaces (kvf<R>-<member>) in `ip netns list`'s output, by run.
std::map<int, std::vector<std::string>> RunNamespaces(const std::string& ip_netns_list);

// `kvfault cleanup`'s part: deletes the namespaces of every run none of whose
// namespaces holds a process any more (`ip netns pids`: a live driver sits in
// kvf<R>-cl, its nodes in theirs), printing each command. Returns how many
// were deleted; *failed counts the deletions that failed.
int CleanupNetns(const Netns::Runner& runner, const std::string& ip, int* failed);

}  // namespace kvstore::fault

#endif  // KVSTORE_TOOLS_KVFAULT_NETNS_H_
