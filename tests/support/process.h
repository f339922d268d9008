// Harness for integration tests that run the real binaries on 127.0.0.1
// (child processes, temporary directories and polling: child_process.h): servers
// (kv-shard, kv-replica) started on port 0 whose bound address is read back
// from their --port-file, a leader with its replicas, a small gRPC client,
// status and content comparisons between nodes, and a way to run kvctl.
//
// Only processes started here are ever signalled, and only by their pid.
#ifndef KVSTORE_TESTS_SUPPORT_PROCESS_H_
#define KVSTORE_TESTS_SUPPORT_PROCESS_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "kvstore/v1/admin.grpc.pb.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "tests/support/child_process.h"

namespace kvstore {
namespace testing {

// The path of our binary built at `built_path` (kv-shard, kv-replica,
// kv-router, kvctl) that a test runs: $KV_BIN_DIR/<its file name> when the
// environment sets KV_BIN_DIR, else `built_path`. KV_SHARD_BIN,
// KV_REPLICA_BIN, KV_ROUTER_BIN and KVCTL_BIN expand to a call of this
// (tests/CMakeLists.txt), so the integration tests of the ordinary build can
// run against the servers of another build without being compiled again:
// tools/test-sanitizers asan-servers points it at build-asan/bin.
std::string OurBinary(const std::string& built_path);

// Ends a server that still runs when the test object that started it goes
// away (~ServerProcess, ~RouterProcess). By default SIGKILL, at once, and
// nothing else. With KV_STOP_GRACEFULLY=1 in the environment
// (tools/test-sanitizers asan-servers sets it): SIGCONT (for one a test left
// stopped) and SIGTERM, and the current test fails unless the server returns
// from main with code 0 within 30 s — in an ASan build that is when
// LeakSanitizer checks it (a leak makes it exit 1); a server killed with SIGKILL is
// never checked. A server that has already exited is only reaped: how it
// ended is its test's business. Then the test also fails if any of `logs`
// (the server's stdout and stderr, one per start) holds a sanitizer report
// line: UBSan's reports go only there. `what` names the server.
void EndAtTeardown(ChildProcess& process, const std::string& what,
                   const std::vector<std::string>& logs);

// A server binary (kv-shard, kv-replica) whose files live in one directory:
//   <dir>/data          --data-dir
//   <dir>/port          --port-file
//   <dir>/<name>-N.log  stdout and stderr of the N-th start (1-based)
// Restarting on the same directory keeps the data, so a test can crash a
// server and start it again.
class ServerProcess {
 public:
  // `binary` is the executable; `log_name` names its log files.
  ServerProcess(std::string dir, std::string binary, std::string log_name);
  // Ends the server if it still runs: EndAtTeardown.
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Starts the binary with --listen=127.0.0.1:0 and the paths above plus
  // `extra_flags`, then waits until the port file names the bound address
  // and a gRPC health check answers SERVING. On failure (timeout, early exit)
  // the status carries the exit status and the tail of the log.
  absl::Status Start(const std::vector<std::string>& extra_flags = {},
                     absl::Duration timeout = absl::Seconds(20));
  // Starts with the flags of the previous Start (the same data directory) on
  // a new free port.
  absl::Status Restart(absl::Duration timeout = absl::Seconds(20));
  // Starts with the flags of the previous Start on the address it had last
  // (--listen=127.0.0.1:<old port>), so peers configured with that address
  // reach it again. The port may briefly be held by someone else: a start
  // that exits before serving is retried until `timeout`.
  absl::Status RestartOnSameAddress(absl::Duration timeout = absl::Seconds(20));

  // Starts the binary with the same arguments as Start and waits for it to
  // exit without ever serving: for start-ups that must be refused.
  absl::StatusOr<ExitStatus> RunExpectingExit(const std::vector<std::string>& extra_flags,
                                              absl::Duration timeout = absl::Seconds(20));

  // "127.0.0.1:PORT" once started; empty while starting.
  const std::string& address() const { return address_; }
  // The address of the most recent successful start (kept after it stops).
  const std::string& last_address() const { return last_address_; }
  const std::string& dir() const { return dir_; }
  const std::string& binary() const { return binary_; }
  // The extra flags of the most recent Start.
  const std::vector<std::string>& flags() const { return flags_; }
  std::string data_dir() const { return dir_ + "/data"; }
  std::string port_file() const { return dir_ + "/port"; }
  // Log of the most recent start.
  std::string log_path() const;
  std::string LogTail(size_t max_bytes = 4000) const { return FileTail(log_path(), max_bytes); }
  ChildProcess& process() { return process_; }
  bool running() const { return process_.running(); }

  // SIGTERM and wait for the exit.
  absl::StatusOr<ExitStatus> Terminate(absl::Duration timeout = absl::Seconds(20));
  // SIGKILL and reap.
  absl::StatusOr<ExitStatus> KillHard() { return process_.KillHard(); }

 private:
  std::vector<std::string> Args(const std::string& listen) const;
  // One attempt: launch with --listen=`listen` and wait for SERVING.
  absl::Status StartOnce(const std::string& listen, absl::Time deadline);
  absl::Status AwaitServing(absl::Time deadline);

  std::string dir_;
  std::string binary_;
  std::string log_name_;
  std::vector<std::string> flags_;
  std::string address_;
  std::string last_address_;
  int starts_ = 0;
  ChildProcess process_;
};

// kv-shard (KV_SHARD_BIN of the test target); logs are <dir>/shard-N.log.
class ShardProcess : public ServerProcess {
 public:
  explicit ShardProcess(std::string dir);
};

// gRPC 1.51 runs client callbacks (stub->async()) on a pool of threads that
// it creates when the first channel uses the callback API and tears down when
// the last such channel is destroyed. When that happens inside a callback
// (the callback held the last reference to a context or stub), the teardown
// joins and frees the thread it runs on, and the process crashes ("double
// free" or "prior > 0" in grpc_cq_internal_unref). This keeps one such
// channel for the life of the process. Idempotent and thread-safe; CheckHealth
// and KvClient call it, and so should any other user of the callback API.
void KeepCallbackThreadsRunning();

// Asks grpc.health.v1.Health/Check (service "") on `address`; OK when the
// answer is SERVING.
absl::Status CheckHealth(const std::string& address, absl::Duration timeout);

// A thin client for the KeyValue and Admin services of one server, each call
// with its own deadline.
class KvClient {
 public:
  explicit KvClient(const std::string& address, absl::Duration timeout = absl::Seconds(10));

  grpc::Status Get(const v1::GetRequest& request, v1::GetResponse* response);
  grpc::Status Set(const v1::SetRequest& request, v1::SetResponse* response);
  grpc::Status Delete(const v1::DeleteRequest& request, v1::DeleteResponse* response);
  grpc::Status MultiGet(const v1::MultiGetRequest& request, v1::MultiGetResponse* response);
  grpc::Status MultiSet(const v1::MultiSetRequest& request, v1::MultiSetResponse* response);
  grpc::Status Status(v1::StatusResponse* response);
  grpc::Status Snapshot(v1::SnapshotResponse* response);
  grpc::Status Promote(const v1::PromoteRequest& request, v1::PromoteResponse* response);
  // Sends every request on one KeyValue/Pipeline stream (from a second thread
  // while this one reads; in messages of 1, 2, 3, ... requests), half-closes,
  // and collects the answers in the order they came; returns the stream's
  // status.
  grpc::Status Pipeline(const std::vector<v1::PipelineRequest>& requests,
                        std::vector<v1::PipelineResponse>* answers);

  // Shorthands.
  grpc::Status Get(const std::string& key, v1::GetResponse* response);
  grpc::Status Set(const std::string& key, const std::string& value, v1::SetResponse* response);
  grpc::Status Delete(const std::string& key, v1::DeleteResponse* response);

  v1::KeyValue::Stub* kv() { return kv_.get(); }
  v1::Admin::Stub* admin() { return admin_.get(); }
  // A context with this client's deadline.
  std::unique_ptr<grpc::ClientContext> NewContext() const;

 private:
  absl::Duration timeout_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::KeyValue::Stub> kv_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

// What a kvctl run printed and returned.
struct KvctlResult {
  int exit_code = -1;  // -1 when it did not exit normally (see status).
  std::string out;
  std::string err;
  ExitStatus status;
  std::string ToString() const;
};

// Runs `KVCTL_BIN --addr=<address> args...` to completion. An empty address
// leaves --addr out (for usage errors).
KvctlResult RunKvctl(const std::string& address, const std::vector<std::string>& args,
                     absl::Duration timeout = absl::Seconds(20));

// ---------------------------------------------------------------- replication

// Admin.Status of the server at `address`.
absl::StatusOr<v1::StatusResponse> FetchStatus(const std::string& address,
                                               absl::Duration timeout = absl::Seconds(5));

// The entry of a leader's Status for the follower configured as `address`
// (as given in --followers); nullptr when there is none.
const v1::FollowerStatus* FindFollower(const v1::StatusResponse& status,
                                       const std::string& address);

// Reads `keys` from the server at `address` with MultiGet, 500 per call, with
// `mode` (READ_MODE_ANY_REPLICA lets a replica answer). Results in key order;
// an error when a call or a key's read fails.
absl::StatusOr<std::vector<v1::GetResult>> ReadAllKeys(
    const std::string& address, const std::vector<std::string>& keys,
    v1::ReadMode mode = v1::READ_MODE_ANY_REPLICA);

// What two nodes hold for a set of keys.
struct ContentDiff {
  size_t compared = 0;                // Keys read from both.
  size_t present = 0;                 // Keys found on both with the same value and version.
  size_t different = 0;               // Keys whose found/value/version differ.
  std::vector<std::string> examples;  // The first few differences, readable.
  absl::Status error;                 // A read that failed (nothing compared).

  bool Same() const { return error.ok() && different == 0; }
  std::string ToString() const;
};

// Compares found, value and version of every key of `keys` on the nodes at
// `a` and `b` (reads with READ_MODE_ANY_REPLICA).
ContentDiff CompareContents(const std::string& a, const std::string& b,
                            const std::vector<std::string>& keys);

// Polls until the node at `replica` reports the same last_index as the node
// at `leader` (and the leader does not move between the two reads of one
// round). The error names both indexes last seen.
absl::Status AwaitSameLastIndex(const std::string& leader, const std::string& replica,
                                absl::Time deadline);

// Polls until the leader at `leader` is ready (it leads an epoch it started:
// it takes writes) and lists every one of `followers` in its Status with state
// "streaming". The error shows the last Status seen.
absl::Status AwaitFollowersStreaming(const std::string& leader,
                                     const std::vector<std::string>& followers,
                                     absl::Time deadline);

// A shard leader (kv-shard) and its followers (kv-replica), each in its own
// subdirectory of `dir`: leader/, replica-0/, replica-1/, ... The replicas
// start first, on free ports, so their addresses are known when the leader
// gets --followers=<them>.
class ShardGroup {
 public:
  ShardGroup(const std::string& dir, const std::string& shard_binary,
             const std::string& replica_binary, int replicas);
  ShardGroup(const ShardGroup&) = delete;
  ShardGroup& operator=(const ShardGroup&) = delete;

  // Starts every replica with `replica_flags`, then the leader with
  // `leader_flags` plus --followers=<replica addresses>, then waits until the
  // leader streams to every follower (so that replication, and the leader's
  // acceptance of writes, does not depend on how fast the first connection is).
  absl::Status Start(const std::vector<std::string>& leader_flags,
                     const std::vector<std::string>& replica_flags,
                     absl::Duration timeout = absl::Seconds(20));

  ServerProcess& leader() { return *leader_; }
  ServerProcess& replica(int i) { return *replicas_.at(static_cast<size_t>(i)); }
  int replica_count() const { return static_cast<int>(replicas_.size()); }
  // The replicas' addresses as given to the leader.
  const std::vector<std::string>& follower_addresses() const { return follower_addresses_; }
  // "--followers=a,b,...".
  std::string FollowersFlag() const;
  // Log tails of every member, for failure messages.
  std::string LogTails(size_t max_bytes = 2000) const;

 private:
  std::unique_ptr<ServerProcess> leader_;
  std::vector<std::unique_ptr<ServerProcess>> replicas_;
  std::vector<std::string> follower_addresses_;
};

// The seed for a randomized test: $KV_TEST_SEED when set, else derived from
// the clock. Printed by the caller so a failure can be rerun with it.
uint64_t TestSeed();

}  // namespace testing
}  // namespace kvstore

#endif  // KVSTORE_TESTS_SUPPORT_PROCESS_H_
