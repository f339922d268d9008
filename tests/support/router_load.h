// Client load through kv-routers for the resharding tests, and the oracle
// that checks it afterwards: what was acknowledged must read back.
//
//   WriteLedger      per key, the last acknowledged value and version and the
//                    values of writes that failed after it (each may or may
//                    not have been applied); a version at or below an earlier
//                    acknowledged one of the same key fails the test at once.
//   RouterWriteLoad  writers (one write in flight each; half of the writes
//                    make a key of their own, half overwrite one of 50 keys)
//                    and compare-and-set counters, on their own threads.
//   Preload / ReadThroughRouter / CheckReadBack: the keys written before a
//                    test, read back in batches with retries (a shard may be
//                    failing over), and the invariants over all of them.
#ifndef KVSTORE_TESTS_SUPPORT_ROUTER_LOAD_H_
#define KVSTORE_TESTS_SUPPORT_ROUTER_LOAD_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "kvstore/v1/kv.pb.h"

namespace kvstore::testing {

class WriteLedger {
 public:
  struct Entry {
    std::string value;
    uint64_t version = 0;  // 0: no write of this key was acknowledged.
    std::vector<std::string> pending;
  };

  // Latencies are kept per period (0..2, e.g. before, during and after a
  // migration); writes go to the period set last.
  void SetPeriod(int period);
  void Acked(const std::string& key, const std::string& value, uint64_t version,
             absl::Duration took = absl::ZeroDuration());
  // The first few failures are printed, with their status.
  void Failed(const std::string& key, const std::string& value, const grpc::Status& status);

  std::map<std::string, Entry> Snapshot() const;
  size_t acks() const;
  size_t failures() const;
  absl::Duration longest() const;
  // The q-quantile of `period`'s acknowledged write latencies, in ms.
  double Percentile(int period, double q) const;
  size_t Count(int period) const;

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> keys_ ABSL_GUARDED_BY(mu_);
  size_t acks_ ABSL_GUARDED_BY(mu_) = 0;
  size_t failures_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Duration longest_ ABSL_GUARDED_BY(mu_);
  int period_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<double> latencies_ms_[3] ABSL_GUARDED_BY(mu_);
};

class RouterWriteLoad {
 public:
  static constexpr int kCounters = 4;

  static constexpr int kWriters = 2;

  // Writer w writes through router(w), asked before each write (a restarted
  // router may come back on another address); the counters go through
  // router(0). `pace` is the pause after each request of a thread: a rate
  // limit that leaves the 2 cores some room for the servers, not a
  // synchronisation. `counter_keys` (kCounters of them) default to
  // "counter-0".. .
  explicit RouterWriteLoad(std::function<std::string(int)> router,
                           absl::Duration pace = absl::Milliseconds(3),
                           std::vector<std::string> counter_keys = {});
  ~RouterWriteLoad();
  RouterWriteLoad(const RouterWriteLoad&) = delete;
  RouterWriteLoad& operator=(const RouterWriteLoad&) = delete;

  void Start();
  void Stop();

  const std::string& counter_key(int c) const { return counter_keys_[c]; }
  WriteLedger& ledger() { return ledger_; }
  const WriteLedger& ledger() const { return ledger_; }
  // A counter's increment whose answer was an error other than a refusal
  // (which wrote nothing) may or may not have been applied: unknown.
  int64_t acked_increments(int c) const { return acked_[c].load(); }
  int64_t unknown_increments(int c) const { return unknown_[c].load(); }

 private:
  void Write(int w);
  void Count();

  const std::function<std::string(int)> router_;
  const absl::Duration pace_;
  std::vector<std::string> counter_keys_;
  WriteLedger ledger_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> acked_[kCounters] = {};
  std::atomic<int64_t> unknown_[kCounters] = {};
  std::vector<std::thread> threads_;
};

// Writes keys `prefix`0 .. `prefix`(count-1) through `router`, 500 a
// MultiSet, with value(i, key) and `ttl_ms`. A batch that fails is sent
// again until `retry_for` has passed (the same values again are harmless).
// Returns key → value.
absl::StatusOr<std::map<std::string, std::string>> Preload(
    const std::string& router, int count,
    const std::function<std::string(int, const std::string&)>& value, uint64_t ttl_ms = 0,
    const std::string& prefix = "pre-", absl::Duration retry_for = absl::Seconds(30));

// "value-<i>-" padded with 'x' to 90 bytes: the preload's usual value.
std::string PaddedValue(int i, const std::string& key);

// Reads `keys` through `router` (MultiGet, 500 a call); a key whose read
// fails is read again alone until a deadline, and a key that still cannot
// be read is a test failure with its code in the result's error. Results in
// the order of `keys`.
std::vector<v1::GetResult> ReadThroughRouter(const std::string& router,
                                             const std::vector<std::string>& keys);

// What CheckReadBack counted.
struct ReadBackCounts {
  size_t preloaded = 0;      // Preloaded keys read back with their value.
  size_t acknowledged = 0;   // Keys with an acknowledged write, read back.
  size_t unsettled = 0;      // Keys whose only writes failed (present or not).
  int64_t increments = 0;    // Counter increments found.
  size_t keys = 0;           // Distinct keys the router finds.
  uint64_t found_bytes = 0;  // Key and value bytes of the found keys `counted` selects.
};

// Reads every preloaded key, every key `load` wrote and its counters
// through `router`, and checks (as gtest failures):
//  - every preloaded key reads back with its value;
//  - every key with an acknowledged write reads back with the last
//    acknowledged value and its version, or with the value of a write that
//    failed after it (whose version is then above the acknowledged one);
//  - a key whose writes all failed is absent or holds one of their values;
//  - each counter lies between its acknowledged increments and those plus
//    the increments whose outcome is unknown.
// `counted`, if given, selects the keys whose bytes go to found_bytes.
ReadBackCounts CheckReadBack(const std::string& router,
                             const std::map<std::string, std::string>& preloaded,
                             const RouterWriteLoad* load,
                             const std::function<bool(const std::string&)>& counted = nullptr);

}  // namespace kvstore::testing

#endif  // KVSTORE_TESTS_SUPPORT_ROUTER_LOAD_H_
