// The in-memory key space: a hash map split into stripes, each behind its own
// reader-writer lock, so readers of different keys never contend and readers of
// the same stripe share it. Every method is thread-safe.
//
// Expiry uses wall-clock Unix milliseconds supplied by the caller (the store's
// Clock): an entry whose expiry is <= now is never returned and is reclaimed by
// EvictExpired (active expiry) or when overwritten.
//
// Memory: each stripe keeps its entries in slabs of one size class each
// (common/storage/entry_slabs.h: 8-byte steps, no per-block header, blocks
// over 1 KiB on the heap) and its table holds 4-byte handles to them. A slot
// freed in one size class serves only that class: when a stripe's class has
// a quarter of its slots free (and two slabs' worth), the mutation that freed
// the last one moves entries out of the emptiest slabs, under the stripe's
// write lock, at most 1,024 per call. No reader keeps a pointer into the map
// past its lock (values are copied out; ForEach's Item lives only during the
// callback), and scan positions name hashes, so moves are invisible.
#ifndef KVSTORE_COMMON_STORAGE_KV_MAP_H_
#define KVSTORE_COMMON_STORAGE_KV_MAP_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace kvstore {

class KvMap {
 public:
  // A read-only view of one entry; valid only during the callback it is passed to.
  struct Item {
    absl::string_view key;
    absl::string_view value;
    uint64_t version = 0;
    int64_t expire_unix_ms = 0;  // 0 = never.
  };

  explicit KvMap(size_t stripes = 64);
  ~KvMap();
  KvMap(const KvMap&) = delete;
  KvMap& operator=(const KvMap&) = delete;

  // Copies the value, version and expiry (0 = never) of a live key; each
  // output may be null. False if absent or expired.
  bool Get(absl::string_view key, int64_t now_unix_ms, std::string* value, uint64_t* version,
           int64_t* expire_unix_ms = nullptr) const;
  // Version of the live key; 0 if absent or expired.
  uint64_t Version(absl::string_view key, int64_t now_unix_ms) const;
  // Inserts or replaces. expire_unix_ms 0 = never expires.
  void Put(absl::string_view key, absl::string_view value, uint64_t version,
           int64_t expire_unix_ms);
  // Removes the key; true if an entry (even an expired one) was there.
  bool Erase(absl::string_view key);
  // Removes up to `max` entries whose expiry is <= now_unix_ms; returns how many.
  size_t EvictExpired(int64_t now_unix_ms, size_t max);
  // Calls fn for every live entry, one stripe at a time under that stripe's read
  // lock; fn must not call into the map. Entries written meanwhile may be seen
  // old or new (what a fuzzy snapshot needs).
  void ForEach(int64_t now_unix_ms, const std::function<void(const Item&)>& fn) const;
  void Clear();

  // ---- Scan: a cursor over the live keys, holding no lock between calls.
  //
  // Guarantee: a scan that follows ScanPage::next from a default ScanPosition
  // until it is empty returns every key present (and live) for the whole scan
  // at least once; a key written or removed during the scan may or may not be
  // returned; expired keys never are. A page holds at most `limit` entries and
  // at most `max_bytes` as ScanEntryBytes counts them, except that a page's
  // first entry is taken whatever its size, so every page makes progress.
  //
  // How: entries are visited in the order of (64-bit key hash, key bytes), an
  // order no insert, delete or table growth changes. Stripes own consecutive
  // hash ranges (StripeFor uses the hash's high bits), and a page takes from
  // its stripe the smallest entries above the position, under that stripe's
  // read lock only. The table's own slot order is not used: a Swiss table
  // places keys by a per-allocation salt, so slot positions mean nothing
  // after a rehash. Since the position is a hash, not a slot or a stripe, it
  // also stays valid on another map of the same keys (a replica, a restarted
  // node, another stripe count); within one map no key is returned twice.
  //
  // Cost: each page walks every entry of each stripe it touches (hashing the
  // key), and a prefix filters as it walks: a full scan costs about
  // (keys / limit) * (keys / stripes) entry visits, whatever the prefix.
  struct ScanPosition {
    // The next key hash to visit.
    uint64_t hash = 0;
    // Set when the last page ended inside a run of keys sharing `hash`: the
    // keys of that run up to and including this one were returned.
    std::optional<std::string> after_key;
  };
  struct ScanOptions {
    // Only keys starting with this (empty: all).
    std::string prefix;
    // Most entries in the page (0 counts as 1).
    size_t limit = 1000;
    // Budget of the page in ScanEntryBytes (see the guarantee above).
    size_t max_bytes = std::numeric_limits<size_t>::max();
    // Leave values out (ScannedEntry::value stays empty).
    bool keys_only = false;
    // Stop at the end of a stripe once this many entries were walked, so a
    // rare prefix does not walk the whole map in one call (the page may then
    // be empty, with a next position).
    size_t max_visits = 1 << 16;
  };
  struct ScannedEntry {
    std::string key;
    std::string value;
    uint64_t version = 0;
    int64_t expire_unix_ms = 0;  // 0 = never.
  };
  struct ScanPage {
    std::vector<ScannedEntry> entries;
    // Where the next page starts; nullopt when the scan is done.
    std::optional<ScanPosition> next;
  };
  // What one entry counts against ScanOptions::max_bytes: its key, its value
  // (none with keys_only) and kScanEntryOverhead for its framing.
  static constexpr size_t kScanEntryOverhead = 40;
  static size_t ScanEntryBytes(size_t key_bytes, size_t value_bytes) {
    return key_bytes + value_bytes + kScanEntryOverhead;
  }
  ScanPage Scan(const ScanPosition& from, int64_t now_unix_ms, const ScanOptions& options) const;

  // Entries held, including expired ones not yet evicted.
  size_t Size() const;
  // Approximate bytes held for keys, values and the map's own structure,
  // counting free slots in slabs and the tables' spare capacity.
  uint64_t MemoryBytes() const;
  // Entries moved by slab compaction since construction (for tests and
  // metrics; see "Memory" above).
  uint64_t EntriesMoved() const;

 private:
  struct Stripe;
  // The stripe owning a key is chosen by the high bits of its 64-bit hash; the
  // stripe's own table probes with the low bits, so the two stay independent.
  Stripe& StripeFor(uint64_t key_hash) const;
  size_t StripeIndex(uint64_t key_hash) const;
  // The smallest hash StripeIndex maps to `stripe` (< stripe_count_).
  uint64_t StripeStart(size_t stripe) const;

  const size_t stripe_count_;
  std::unique_ptr<Stripe[]> stripes_;
  // Where the next EvictExpired starts, so repeated bounded calls cover every stripe.
  std::atomic<size_t> evict_cursor_{0};
};

}  // namespace kvstore

#endif  // KVSTORE_COMMON_STORAGE_KV_MAP_H_
