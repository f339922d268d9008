// Histories of a correct register, made up at random, must check valid: a
// simulated store applies each op at a random point between its invoke and
// its completion, lets some writes time out (info) and land later or never,
// and answers CAS mismatches with the current version. This guards the search
// against false alarms on histories larger than the hand-made ones.
//
// The test prints its seed; rerun one with
//   KV_TEST_SEED=<seed> build/bin/kvcheck_random_history_test
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "gtest/gtest.h"
#include "tests/unit/check/history_builder.h"
#include "tools/kvcheck/checker.h"

namespace kvstore::check {
namespace {

using namespace ::kvstore::check::testing;  // NOLINT: the history vocabulary

uint64_t Seed(const char* test) {
  uint64_t seed = 0;
  const char* env = std::getenv("KV_TEST_SEED");
  if (env == nullptr || !absl::SimpleAtoi(env, &seed)) seed = std::random_device()();
  std::printf("[  SEED    ] %s: KV_TEST_SEED=%llu\n", test, static_cast<unsigned long long>(seed));
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  return seed;
}

// One shard: versions are its log indices.
struct Store {
  struct Entry {
    std::string value;
    uint64_t version;
  };
  std::map<std::string, Entry> keys;
  uint64_t index = 0;

  uint64_t VersionOf(const std::string& key) const {
    auto it = keys.find(key);
    return it == keys.end() ? 0 : it->second.version;
  }
  // Applies `req` and returns the completion fields; mismatch: fail.
  Json Apply(const Json& req, bool* mismatch) {
    const std::string key = req["key"];
    const std::string f = req["f"];
    *mismatch = false;
    if (f == "get") {
      auto it = keys.find(key);
      return it == keys.end() ? NotFound() : Found(it->second.value, it->second.version);
    }
    const uint64_t current = VersionOf(key);
    if (req.contains("if_version") && req["if_version"].get<uint64_t>() != current) {
      *mismatch = true;
      return CurrentVersion(current);
    }
    if (f == "delete") {
      if (current == 0) return NothingDeleted();
      keys.erase(key);
      return Deleted(++index);
    }
    keys[key] = {req["value"], ++index};
    return Version(index);
  }
};

struct Pending {
  int64_t proc;
  Json req;
  std::optional<Json> result;  // Set once applied.
  bool mismatch = false;
  bool timed_out = false;      // Completed as info; may still be applied.
};

TEST(RandomHistoryTest, HistoryOfACorrectRegisterIsValid) {
  std::mt19937_64 rng(Seed("HistoryOfACorrectRegisterIsValid"));
  auto chance = [&](int percent) { return static_cast<int>(rng() % 100) < percent; };
  const std::vector<std::string> keys = {"r0", "r1", "r2"};
  Store store;
  HistoryBuilder b;
  std::map<int64_t, Pending> busy;  // proc -> its op
  std::vector<Pending> limbo;       // Timed out, not applied yet.
  int64_t next_proc = 0;
  std::vector<int64_t> idle;
  for (int i = 0; i < 8; ++i) idle.push_back(next_proc++);
  int written = 0;

  for (int step = 0; step < 4000; ++step) {
    // Start an op on an idle proc.
    if (!idle.empty() && chance(40)) {
      const int64_t proc = idle.back();
      idle.pop_back();
      const std::string key = keys[rng() % keys.size()];
      const uint64_t known = store.VersionOf(key);
      Json req;
      switch (rng() % 5) {
        case 0:
        case 1: req = Get(key); break;
        case 2: req = Set(key, "v" + std::to_string(written++)); break;
        case 3: req = Cas(key, "v" + std::to_string(written++), chance(60) ? known : rng() % (known + 2)); break;
        default:
          req = Delete(key);
          if (chance(30)) req["if_version"] = known;
          break;
      }
      b.Invoke(proc, req);
      Pending p;
      p.proc = proc;
      p.req = req;
      busy[proc] = p;
    }
    // Apply one in-flight or timed-out op.
    if (!busy.empty() && chance(50)) {
      auto it = std::next(busy.begin(), static_cast<long>(rng() % busy.size()));
      if (!it->second.result) it->second.result = store.Apply(it->second.req, &it->second.mismatch);
    }
    if (!limbo.empty() && chance(5)) {
      const size_t i = rng() % limbo.size();
      bool mismatch;
      (void)store.Apply(limbo[i].req, &mismatch);
      limbo.erase(limbo.begin() + static_cast<long>(i));
    }
    // Complete one.
    if (!busy.empty() && chance(45)) {
      auto it = std::next(busy.begin(), static_cast<long>(rng() % busy.size()));
      Pending p = it->second;
      busy.erase(it);
      const bool is_write = p.req["f"] != "get";
      if (is_write && chance(10)) {
        // Timed out: applied or not, the client cannot tell.
        b.Info(p.proc);
        if (!p.result) limbo.push_back(p);
        idle.push_back(next_proc++);  // A new proc takes over.
        continue;
      }
      if (!p.result) p.result = store.Apply(p.req, &p.mismatch);
      if (p.mismatch) {
        b.Fail(p.proc, *p.result);
      } else {
        b.Ok(p.proc, *p.result);
      }
      idle.push_back(p.proc);
    }
  }
  // Heal: what is in flight completes as info; what is in limbo lands or not.
  for (auto& [proc, p] : busy) {
    b.Info(proc);
    if (!p.result && chance(50)) {
      bool mismatch;
      (void)store.Apply(p.req, &mismatch);
    }
  }
  for (const Pending& p : limbo) {
    if (chance(50)) {
      bool mismatch;
      (void)store.Apply(p.req, &mismatch);
    }
  }
  for (const std::string& key : keys) {
    bool mismatch;
    b.Invoke(next_proc, Final(Get(key))).Ok(next_proc, store.Apply(Get(key), &mismatch));
  }

  absl::StatusOr<History> h = ParseHistory(b.Text());
  ASSERT_TRUE(h.ok()) << h.status();
  CheckOptions options;
  options.search.time_limit_ms = 60'000;
  const Report r = Check(*h, options);
  for (const Violation& v : r.violations) ADD_FAILURE() << ViolationKindName(v.kind) << ": " << v.message;
  EXPECT_EQ(r.durability.lost, 0);
  EXPECT_GT(r.durability.acked, 100) << "the workload should write";
  int64_t states = 0;
  for (const auto& [key, k] : r.keys) states += k.states;
  std::printf("%zu ops, %lld acked, %lld recovered, %lld search states\n", h->ops.size(),
              static_cast<long long>(r.durability.acked), static_cast<long long>(r.durability.recovered),
              static_cast<long long>(states));
}

}  // namespace
}  // namespace kvstore::check
