// KvMap::Scan: the cursor's guarantee (every key present for the whole scan is
// returned at least once, here exactly once) while the table grows, shrinks and
// is written by other threads between and during pages; its page limits; and
// its filters. Time is a number the test picks.
#include <atomic>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/storage/kv_map.h"
#include "gtest/gtest.h"

namespace kvstore {
namespace {

constexpr int64_t kNow = 1'700'000'000'000;  // Unix ms.
constexpr int64_t kNever = 0;

std::string KeyNumber(const std::string& prefix, int i) {
  return absl::StrFormat("%s%08d", prefix, i);
}

void PutRange(KvMap* map, const std::string& prefix, int from, int to) {
  for (int i = from; i < to; ++i) map->Put(KeyNumber(prefix, i), "v", 1, kNever);
}

// What a whole scan returned: how often each key came back, and the pages.
struct ScanResult {
  std::map<std::string, int> seen;
  int pages = 0;
  size_t largest_page = 0;

  int Duplicates() const {
    int n = 0;
    for (const auto& [key, count] : seen) n += count - 1;
    return n;
  }
};

// Runs a scan to its end, calling `between(page_number)` after each page (the
// test's writes "during" the scan).
ScanResult ScanAll(const KvMap& map, KvMap::ScanOptions options,
                   const std::function<void(int)>& between = nullptr) {
  ScanResult result;
  std::optional<KvMap::ScanPosition> position = KvMap::ScanPosition{};
  while (position.has_value()) {
    KvMap::ScanPage page = map.Scan(*position, kNow, options);
    ++result.pages;
    result.largest_page = std::max(result.largest_page, page.entries.size());
    for (const KvMap::ScannedEntry& e : page.entries) ++result.seen[e.key];
    position = std::move(page.next);
    if (between) between(result.pages);
    EXPECT_LT(result.pages, 1'000'000) << "the scan does not end";
    if (result.pages >= 1'000'000) break;
  }
  return result;
}

// Keys of `expected` that `result` never returned, the first few, readable.
std::string Missing(const ScanResult& result, const std::set<std::string>& expected, int* count) {
  std::string out;
  *count = 0;
  for (const std::string& key : expected) {
    if (result.seen.count(key) == 0) {
      if (++*count <= 5) absl::StrAppend(&out, key, " ");
    }
  }
  return out;
}

std::set<std::string> KeySet(const std::string& prefix, int from, int to) {
  std::set<std::string> keys;
  for (int i = from; i < to; ++i) keys.insert(KeyNumber(prefix, i));
  return keys;
}

TEST(KvMapScanTest, EmptyMapIsDoneInOnePage) {
  KvMap map;
  KvMap::ScanPage page = map.Scan({}, kNow, {});
  EXPECT_TRUE(page.entries.empty());
  EXPECT_FALSE(page.next.has_value());
}

TEST(KvMapScanTest, EveryKeyComesBackExactlyOnceInPagesOfAtMostLimit) {
  KvMap map;
  PutRange(&map, "k", 0, 5000);
  KvMap::ScanOptions options;
  options.limit = 37;
  ScanResult result = ScanAll(map, options);
  int missing = 0;
  EXPECT_EQ(Missing(result, KeySet("k", 0, 5000), &missing), "");
  EXPECT_EQ(missing, 0);
  EXPECT_EQ(result.Duplicates(), 0);
  EXPECT_EQ(result.seen.size(), 5000u);
  EXPECT_LE(result.largest_page, 37u);
  // Pages are full but for the last: a stripe's end does not cut a page short.
  EXPECT_LE(result.pages, 5000 / 37 + 2);
}

TEST(KvMapScanTest, EntriesCarryValueVersionAndExpiry) {
  KvMap map;
  map.Put("a", "alpha", 7, kNow + 5000);
  map.Put("b", "beta", 9, kNever);
  KvMap::ScanPage page = map.Scan({}, kNow, {});
  ASSERT_EQ(page.entries.size(), 2u);
  std::map<std::string, KvMap::ScannedEntry> by_key;
  for (auto& e : page.entries) by_key[e.key] = e;
  EXPECT_EQ(by_key["a"].value, "alpha");
  EXPECT_EQ(by_key["a"].version, 7u);
  EXPECT_EQ(by_key["a"].expire_unix_ms, kNow + 5000);
  EXPECT_EQ(by_key["b"].value, "beta");
  EXPECT_EQ(by_key["b"].expire_unix_ms, 0);
  EXPECT_FALSE(page.next.has_value());
}

TEST(KvMapScanTest, KeysOnlyLeavesValuesOut) {
  KvMap map;
  map.Put("a", "alpha", 7, kNever);
  KvMap::ScanOptions options;
  options.keys_only = true;
  KvMap::ScanPage page = map.Scan({}, kNow, options);
  ASSERT_EQ(page.entries.size(), 1u);
  EXPECT_EQ(page.entries[0].key, "a");
  EXPECT_EQ(page.entries[0].value, "");
  EXPECT_EQ(page.entries[0].version, 7u);
}

TEST(KvMapScanTest, ExpiredKeysAreNotReturned) {
  KvMap map;
  map.Put("gone", "v", 1, kNow);  // Expires exactly now: expired.
  map.Put("later", "v", 2, kNow + 1);
  map.Put("never", "v", 3, kNever);
  ScanResult result = ScanAll(map, {});
  EXPECT_EQ(result.seen.count("gone"), 0u);
  EXPECT_EQ(result.seen.count("later"), 1u);
  EXPECT_EQ(result.seen.count("never"), 1u);
}

TEST(KvMapScanTest, PrefixIsAFilter) {
  KvMap map;
  PutRange(&map, "user:", 0, 300);
  PutRange(&map, "order:", 0, 3000);
  KvMap::ScanOptions options;
  options.prefix = "user:";
  options.limit = 10;
  ScanResult result = ScanAll(map, options);
  EXPECT_EQ(result.seen.size(), 300u);
  for (const auto& [key, count] : result.seen) EXPECT_TRUE(absl::StartsWith(key, "user:")) << key;
  EXPECT_EQ(result.Duplicates(), 0);
}

TEST(KvMapScanTest, ARarePrefixYieldsEmptyPagesThatStillAdvance) {
  KvMap map(8);
  PutRange(&map, "noise:", 0, 4000);
  map.Put("needle", "v", 1, kNever);
  KvMap::ScanOptions options;
  options.prefix = "needle";
  options.max_visits = 1;  // Each page stops after its first stripe.
  ScanResult result = ScanAll(map, options);
  EXPECT_EQ(result.seen.size(), 1u);
  EXPECT_EQ(result.seen.count("needle"), 1u);
  EXPECT_EQ(result.pages, 8);  // One stripe per page: the walk was bounded.
}

TEST(KvMapScanTest, PageStaysWithinMaxBytesButAlwaysTakesOneEntry) {
  KvMap map;
  for (int i = 0; i < 100; ++i) map.Put(KeyNumber("k", i), std::string(100, 'x'), 1, kNever);
  map.Put("huge", std::string(10'000, 'y'), 1, kNever);
  KvMap::ScanOptions options;
  options.max_bytes = 1000;
  std::optional<KvMap::ScanPosition> position = KvMap::ScanPosition{};
  std::set<std::string> seen;
  while (position.has_value()) {
    KvMap::ScanPage page = map.Scan(*position, kNow, options);
    ASSERT_FALSE(page.entries.empty()) << "a page made no progress";
    size_t bytes = 0;
    for (const auto& e : page.entries) {
      bytes += KvMap::ScanEntryBytes(e.key.size(), e.value.size());
      seen.insert(e.key);
    }
    if (page.entries.size() > 1) {
      EXPECT_LE(bytes, options.max_bytes);
    }
    position = std::move(page.next);
  }
  EXPECT_EQ(seen.size(), 101u);
  EXPECT_EQ(seen.count("huge"), 1u);
}

// The point of the hash order: the table grows (rehashes) several times
// between pages, and no key present before the scan is missed.
TEST(KvMapScanTest, ScanSpanningTableGrowthMissesNoKey) {
  KvMap map(4);  // Few stripes: each table is large and grows often.
  PutRange(&map, "old:", 0, 2000);
  const uint64_t memory_before = map.MemoryBytes();
  KvMap::ScanOptions options;
  options.limit = 50;
  int grown_to = 0;
  ScanResult result = ScanAll(map, options, [&](int page) {
    // Between each of the first pages: 10,000 new keys.
    if (page <= 8) {
      PutRange(&map, "new:", grown_to, grown_to + 10'000);
      grown_to += 10'000;
    }
  });
  EXPECT_GT(map.MemoryBytes(), 20 * memory_before) << "the tables should have grown";
  int missing = 0;
  const std::string examples = Missing(result, KeySet("old:", 0, 2000), &missing);
  EXPECT_EQ(missing, 0) << "missed, e.g.: " << examples;
  EXPECT_EQ(result.Duplicates(), 0);
}

// Compaction moves entries between slabs while a scan position is held: half
// the keys grow into another size class between pages, leaving the slabs of
// the rest half empty, so the rest are moved. Every key that kept its value
// comes back once, with that value.
TEST(KvMapScanTest, CompactionBetweenPagesMissesNoKey) {
  KvMap map(4);
  for (int i = 0; i < 8000; ++i) {
    map.Put(KeyNumber(i % 2 == 0 ? "keep:" : "grow:", i), std::string(100, 'k'), 1, kNever);
  }
  KvMap::ScanOptions options;
  options.limit = 50;
  std::map<std::string, int> seen;
  std::optional<KvMap::ScanPosition> position = KvMap::ScanPosition{};
  uint64_t moved_during_scan = 0;
  for (int page = 0; position.has_value(); ++page) {
    ASSERT_LT(page, 100000) << "the scan does not end";
    KvMap::ScanPage got = map.Scan(*position, kNow, options);
    for (const KvMap::ScannedEntry& e : got.entries) {
      ++seen[e.key];
      if (absl::StartsWith(e.key, "keep:")) EXPECT_EQ(e.value, std::string(100, 'k')) << e.key;
    }
    position = std::move(got.next);
    if (page < 4) {
      // A quarter of the growing keys per page, after the scan has begun.
      const uint64_t before = map.EntriesMoved();
      for (int i = 1 + page * 2000; i < (page + 1) * 2000; i += 2) {
        map.Put(KeyNumber("grow:", i), std::string(300, 'g'), 2, kNever);
      }
      moved_during_scan += map.EntriesMoved() - before;
    }
  }
  EXPECT_GT(moved_during_scan, 0u) << "compaction did not run during the scan";
  int missing = 0;
  std::set<std::string> keep;
  for (int i = 0; i < 8000; i += 2) keep.insert(KeyNumber("keep:", i));
  ScanResult result;
  result.seen = seen;
  const std::string examples = Missing(result, keep, &missing);
  EXPECT_EQ(missing, 0) << "missed, e.g.: " << examples;
  EXPECT_EQ(result.Duplicates(), 0);
}

// And when the tables shrink under it: keys deleted between pages (half the
// map, and all of another prefix) do not make survivors skip.
TEST(KvMapScanTest, DeletesDuringTheScanSkipNoSurvivor) {
  KvMap map(4);
  PutRange(&map, "keep:", 0, 3000);
  PutRange(&map, "drop:", 0, 20'000);
  KvMap::ScanOptions options;
  options.limit = 100;
  int dropped = 0;
  ScanResult result = ScanAll(map, options, [&](int) {
    for (int n = 0; n < 2000 && dropped < 20'000; ++n) {
      EXPECT_TRUE(map.Erase(KeyNumber("drop:", dropped++)));
    }
  });
  map.EvictExpired(kNow, 1);  // Nothing expires; just exercise the map afterwards.
  int missing = 0;
  const std::string examples = Missing(result, KeySet("keep:", 0, 3000), &missing);
  EXPECT_EQ(missing, 0) << "missed, e.g.: " << examples;
  EXPECT_EQ(result.Duplicates(), 0);
}

// A position names a place in hash order, not in one map's tables: a scan
// begun on one map continues on another holding the same keys (a replica, or
// a restarted node with another stripe count).
TEST(KvMapScanTest, PositionContinuesOnAnotherMapWithOtherStripes) {
  KvMap first(64);
  KvMap second(7);
  PutRange(&first, "k", 0, 3000);
  PutRange(&second, "k", 0, 3000);
  KvMap::ScanOptions options;
  options.limit = 100;
  std::map<std::string, int> seen;
  std::optional<KvMap::ScanPosition> position = KvMap::ScanPosition{};
  for (int page = 0; position.has_value(); ++page) {
    const KvMap& map = page % 2 == 0 ? first : second;
    KvMap::ScanPage got = map.Scan(*position, kNow, options);
    for (const auto& e : got.entries) ++seen[e.key];
    position = std::move(got.next);
  }
  EXPECT_EQ(seen.size(), 3000u);
  for (const auto& [key, count] : seen) EXPECT_EQ(count, 1) << key;
}

TEST(KvMapScanTest, AfterKeyPositionResumesInsideAHash) {
  KvMap map;
  PutRange(&map, "k", 0, 200);
  // The whole map in one page, to learn the order.
  KvMap::ScanOptions all;
  all.limit = 1000;
  std::vector<std::string> order;
  for (auto& e : map.Scan({}, kNow, all).entries) order.push_back(e.key);
  ASSERT_EQ(order.size(), 200u);
  // A full page of one entry names where the next starts; resuming from a
  // position that names the 100th key's hash and the key itself returns
  // exactly the keys after it.
  KvMap::ScanOptions one;
  one.limit = 1;
  std::optional<KvMap::ScanPosition> position = KvMap::ScanPosition{};
  for (int i = 0; i < 100; ++i) position = map.Scan(*position, kNow, one).next;
  ASSERT_TRUE(position.has_value());
  KvMap::ScanPosition inside{position->hash - 1, order[99]};
  std::vector<std::string> rest;
  for (auto& e : map.Scan(inside, kNow, all).entries) rest.push_back(e.key);
  EXPECT_EQ(rest, std::vector<std::string>(order.begin() + 100, order.end()));
}

// Threads write other keys while a scan runs: the keys nobody touches all come
// back (run under TSan for the locking).
TEST(KvMapScanTest, ConcurrentWritersDoNotHideStableKeys) {
  KvMap map(16);
  PutRange(&map, "stable:", 0, 5000);
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int t = 0; t < 2; ++t) {
    writers.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; !stop.load(); ++i) {
        const std::string key = KeyNumber(absl::StrCat("churn", t, ":"), rng() % 20'000);
        if (rng() % 3 == 0) {
          map.Erase(key);
        } else {
          map.Put(key, std::string(rng() % 64, 'z'), i, kNever);
        }
      }
    });
  }
  KvMap::ScanOptions options;
  options.limit = 64;
  ScanResult result = ScanAll(map, options);
  stop = true;
  for (std::thread& w : writers) w.join();
  int missing = 0;
  const std::string examples = Missing(result, KeySet("stable:", 0, 5000), &missing);
  EXPECT_EQ(missing, 0) << "missed, e.g.: " << examples;
  for (const auto& [key, count] : result.seen) EXPECT_EQ(count, 1) << key;
}

}  // namespace
}  // namespace kvstore
