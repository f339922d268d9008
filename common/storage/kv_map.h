// The in-memory key space: a hash map split into stripes, each behind its own
// reader-writer lock, so readers of different keys never contend and readers of
// the same stripe share it. Every method is thread-safe.
//
// Expiry uses wall-clock Unix milliseconds supplied by the caller (the store's
// Clock): an entry whose expiry is <= now is never returned and is reclaimed by
// EvictExpired (active expiry) or when overwritten.
#ifndef KVSTORE_COMMON_STORAGE_KV_MAP_H_
#define KVSTORE_COMMON_STORAGE_KV_MAP_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

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

  // Copies the value and version of a live key. False if absent or expired.
  bool Get(absl::string_view key, int64_t now_unix_ms, std::string* value, uint64_t* version) const;
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

  // Entries held, including expired ones not yet evicted.
  size_t Size() const;
  // Approximate bytes held for keys, values and the map's own structure.
  uint64_t MemoryBytes() const;

 private:
  struct Stripe;
  // The stripe owning a key is chosen by the high bits of its 64-bit hash; the
  // stripe's own table probes with the low bits, so the two stay independent.
  Stripe& StripeFor(uint64_t key_hash) const;

  const size_t stripe_count_;
  std::unique_ptr<Stripe[]> stripes_;
  // Where the next EvictExpired starts, so repeated bounded calls cover every stripe.
  std::atomic<size_t> evict_cursor_{0};
};

}  // namespace kvstore

#endif  // KVSTORE_COMMON_STORAGE_KV_MAP_H_
