// kv-map-memory: fills a KvMap with N keys "key:%010d" of a fixed value size and
// prints what they cost, measured (process RSS) and estimated (KvMap::MemoryBytes),
// per key and beyond the key and value bytes; plus insert and lookup time.
// With --resize_value_size, it then overwrites every --resize_every-th key with
// a value of that size and prints the memory again: what changing value sizes
// cost (entries leaving one size for another).
//
//   kv-map-memory [--keys=]1000000 [--value_size=100] [--ttl] [--threads=2]
//                 [--resize_value_size=0] [--resize_every=2]
#include <malloc.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "common/storage/kv_map.h"
#include "gflags/gflags.h"

DEFINE_uint64(keys, 1000000, "Number of keys to insert");
DEFINE_uint64(value_size, 100, "Bytes per value");
DEFINE_bool(
    ttl, false,
    "Give every key an expiry (scattered over the next ~11 days), to cost the expiry index");
DEFINE_uint64(threads, 1, "Threads inserting disjoint key ranges");
DEFINE_uint64(stripes, 64, "KvMap stripes");
DEFINE_uint64(resize_value_size, 0,
              "After the lookups, overwrite keys with values of this size (0: skip)");
DEFINE_uint64(resize_every, 2, "Overwrite every resize_every-th key (1: all)");

namespace {

// Resident set size from /proc/self/statm, after handing freed heap back to the kernel.
int64_t ResidentBytes() {
  malloc_trim(0);
  std::ifstream statm("/proc/self/statm");
  int64_t size_pages = 0;
  int64_t resident_pages = 0;
  statm >> size_pages >> resident_pages;
  return resident_pages * sysconf(_SC_PAGESIZE);
}

// Runs fn(i) for i in [0, n) split into contiguous ranges over `threads` threads;
// returns the wall time in seconds.
template <typename Fn>
double TimeParallel(uint64_t n, uint64_t threads, Fn fn) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (uint64_t t = 0; t < threads; ++t) {
    workers.emplace_back([=] {
      const uint64_t begin = n * t / threads;
      const uint64_t end = n * (t + 1) / threads;
      char key[32];
      for (uint64_t i = begin; i < end; ++i) {
        const int len =
            std::snprintf(key, sizeof(key), "key:%010llu", static_cast<unsigned long long>(i));
        fn(absl::string_view(key, len), i);
      }
    });
  }
  for (std::thread& w : workers) w.join();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("Usage: kv-map-memory --keys=N --value_size=B [--ttl] [--threads=T]");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  uint64_t n = FLAGS_keys;
  if (argc > 1 && !absl::SimpleAtoi(argv[1], &n)) {  // `kv-map-memory 500000` works too.
    absl::FPrintF(stderr, "not a key count: %s\n", argv[1]);
    return 2;
  }
  const uint64_t threads = FLAGS_threads == 0 ? 1 : FLAGS_threads;
  const std::string value(FLAGS_value_size, 'v');
  constexpr int64_t kNow = 1'700'000'000'000;
  // Expiries in scrambled order, as real TTLs arrive, not sorted (the B-tree's best case).
  auto expire_for = [](uint64_t i) -> int64_t {
    return FLAGS_ttl ? kNow + 1 + static_cast<int64_t>(i * 2654435761u % 1'000'000'000) : 0;
  };

  kvstore::KvMap map(FLAGS_stripes);
  const uint64_t map_before = map.MemoryBytes();
  const int64_t rss_before = ResidentBytes();

  const double insert_s = TimeParallel(n, threads, [&](absl::string_view key, uint64_t i) {
    map.Put(key, value, i + 1, expire_for(i));
  });

  const int64_t rss_after = ResidentBytes();
  const uint64_t map_after = map.MemoryBytes();

  std::atomic<uint64_t> hits{0};
  const double get_s = TimeParallel(n, threads, [&](absl::string_view key, uint64_t) {
    if (map.Version(key, kNow) != 0) hits.fetch_add(1, std::memory_order_relaxed);
  });
  const uint64_t found = hits.load();

  std::atomic<uint64_t> got{0};
  const double copy_s = TimeParallel(n, threads, [&](absl::string_view key, uint64_t) {
    std::string v;
    if (map.Get(key, kNow, &v, nullptr) && v.size() == FLAGS_value_size) {
      got.fetch_add(1, std::memory_order_relaxed);
    }
  });

  const double rss_delta = static_cast<double>(rss_after - rss_before);
  const double map_delta = static_cast<double>(map_after - map_before);
  const double payload = 14.0 + FLAGS_value_size;  // Key "key:%010d" plus value.
  const double per = n == 0 ? 1.0 : static_cast<double>(n);
  absl::PrintF("keys:             %d (value %d bytes, ttl %s, %d stripes, %d threads)\n", n,
               FLAGS_value_size, FLAGS_ttl ? "yes" : "no", FLAGS_stripes, threads);
  absl::PrintF("size:             %d\n", map.Size());
  absl::PrintF("rss delta:        %d bytes = %.1f bytes/key (%.1f over key+value)\n",
               rss_after - rss_before, rss_delta / per, rss_delta / per - payload);
  absl::PrintF("MemoryBytes:      %d bytes = %.1f bytes/key (%.1f over key+value)\n",
               map_after - map_before, map_delta / per, map_delta / per - payload);
  absl::PrintF("estimate / rss:   %.3f\n", rss_delta > 0 ? map_delta / rss_delta : 0.0);
  absl::PrintF("insert:           %.3f s = %.0f ns/key, %.2f M keys/s\n", insert_s,
               insert_s * 1e9 / per, per / insert_s / 1e6);
  absl::PrintF("lookup (Version): %.3f s = %.0f ns/key, %d found\n", get_s, get_s * 1e9 / per,
               found);
  absl::PrintF("Get (copy value): %.3f s = %.0f ns/key, %d found\n", copy_s, copy_s * 1e9 / per,
               got.load());
  if (found != n || got.load() != n) return 1;
  if (FLAGS_resize_value_size == 0) return 0;

  const uint64_t every = FLAGS_resize_every == 0 ? 1 : FLAGS_resize_every;
  const std::string resized(FLAGS_resize_value_size, 'w');
  uint64_t resized_keys = 0;
  for (uint64_t i = 0; i < n; i += every) ++resized_keys;
  const double resize_s = TimeParallel(n, threads, [&](absl::string_view key, uint64_t i) {
    if (i % every == 0) map.Put(key, resized, n + i + 1, expire_for(i));
  });
  const int64_t rss_resized = ResidentBytes();
  const uint64_t map_resized = map.MemoryBytes();
  const double payload_now =
      payload * per + static_cast<double>(resized_keys) *
                          (static_cast<double>(FLAGS_resize_value_size) - FLAGS_value_size);
  absl::PrintF("resized:          %d keys to %d-byte values in %.3f s\n", resized_keys,
               FLAGS_resize_value_size, resize_s);
  absl::PrintF("rss delta now:    %d bytes = %.1f bytes/key (%.1f over key+value)\n",
               rss_resized - rss_before, (rss_resized - rss_before) / per,
               ((rss_resized - rss_before) - payload_now) / per);
  absl::PrintF("MemoryBytes now:  %d bytes = %.1f bytes/key (%.1f over key+value)\n",
               map_resized - map_before, (map_resized - map_before) / per,
               ((map_resized - map_before) - payload_now) / per);
  absl::PrintF("compaction moved: %d entries\n", map.EntriesMoved());
  return 0;
}
