// Measures how evenly HashRing spreads the hash space, for choosing the
// default number of virtual nodes (docs/ring.md records the output).
//
//   build/bin/ring_balance [--sets=300] [--seed=N] [--vnodes=64,256,1024]
//
// For each vnode count: over `sets` random sets of shard names, the largest
// shard's share of the hash space over the mean share with 3 shards (exact,
// from the tokens), and the share a 4th shard takes when added; then the same
// for the names shard-0..shard-3, and the build and lookup cost.
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/ring/hash_ring.h"

namespace {

using kvstore::HashRing;

struct Stats {
  double min = 1e9, max = 0, sum = 0;
  int n = 0;
  void Add(double x) {
    min = std::min(min, x);
    max = std::max(max, x);
    sum += x;
    ++n;
  }
  double mean() const { return n == 0 ? 0 : sum / n; }
};

double MaxOverMean(const HashRing& ring) {
  std::vector<double> f = ring.Ownership();
  return *std::max_element(f.begin(), f.end()) * static_cast<double>(f.size());
}

HashRing MustBuild(std::vector<std::string> names, int vnodes) {
  absl::StatusOr<HashRing> ring = HashRing::Build(std::move(names), vnodes);
  if (!ring.ok()) {
    std::fprintf(stderr, "%s\n", ring.status().ToString().c_str());
    std::exit(1);
  }
  return *std::move(ring);
}

}  // namespace

int main(int argc, char** argv) {
  int sets = 300;
  uint64_t seed = 1;
  std::vector<int> vnode_counts = {64, 128, 256, 512, 1024, 2048};
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (absl::ConsumePrefix(&arg, "--sets=") && absl::SimpleAtoi(arg, &sets)) continue;
    if (absl::ConsumePrefix(&arg, "--seed=") && absl::SimpleAtoi(arg, &seed)) continue;
    if (absl::ConsumePrefix(&arg, "--vnodes=")) {
      vnode_counts.clear();
      for (absl::string_view v : absl::StrSplit(arg, ',')) {
        int n = 0;
        if (!absl::SimpleAtoi(v, &n)) return 2;
        vnode_counts.push_back(n);
      }
      continue;
    }
    std::fprintf(stderr, "usage: %s [--sets=N] [--seed=N] [--vnodes=A,B,...]\n", argv[0]);
    return 2;
  }
  std::printf("seed %" PRIu64 ", %d random name sets per row\n\n", seed, sets);
  std::printf(
      "vnodes | 3 shards max/mean: worst  mean  >1.10 | 4th shard share: min    max   | "
      "shard-0..3: max/mean  4th | build us  lookup ns\n");
  for (int vnodes : vnode_counts) {
    std::mt19937_64 rng(seed);
    Stats balance, fourth;
    int over_110 = 0;  // Name sets whose largest of 3 shards is over 1.10 x the mean.
    for (int s = 0; s < sets; ++s) {
      std::vector<std::string> names;
      for (int i = 0; i < 4; ++i) names.push_back(absl::StrFormat("node-%016x", rng()));
      HashRing three = MustBuild({names[0], names[1], names[2]}, vnodes);
      HashRing four = MustBuild(names, vnodes);
      balance.Add(MaxOverMean(three));
      if (MaxOverMean(three) > 1.10) ++over_110;
      fourth.Add(four.Ownership()[3]);
    }
    const auto start = std::chrono::steady_clock::now();
    HashRing named3 = MustBuild({"shard-0", "shard-1", "shard-2"}, vnodes);
    const auto built = std::chrono::steady_clock::now();
    HashRing named4 = MustBuild({"shard-0", "shard-1", "shard-2", "shard-3"}, vnodes);
    constexpr int kLookups = 1000000;
    uint64_t sink = 0;
    const auto lookups_start = std::chrono::steady_clock::now();
    for (int i = 0; i < kLookups; ++i) {
      sink += named3.OwnerOfPosition(rng());
    }
    const auto lookups_end = std::chrono::steady_clock::now();
    std::printf(
        "%6d |                    %5.3f  %5.3f  %4.1f%% |                  %5.1f%%  %5.1f%% |"
        "            %5.3f  %4.1f%% | %8.0f  %9.1f%s\n",
        vnodes, balance.max, balance.mean(), 100.0 * over_110 / sets, fourth.min * 100,
        fourth.max * 100, MaxOverMean(named3), named4.Ownership()[3] * 100,
        std::chrono::duration<double, std::micro>(built - start).count(),
        std::chrono::duration<double, std::nano>(lookups_end - lookups_start).count() / kLookups,
        sink == 0 ? " " : "");
  }
  return 0;
}
