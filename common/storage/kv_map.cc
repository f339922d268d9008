#include "common/storage/kv_map.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <new>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "glog/logging.h"

namespace kvstore {
namespace {

// One heap block per key: this header, then the expiry only if the key has
// one, then the key bytes, then the value bytes. Two std::string members would
// spend 64 bytes on string headers before any data, and a second allocation for
// anything longer than the small-string buffer; an expiry field in every entry
// would spend 8 bytes on each key without a TTL, most of them (docs/performance.md).
struct Entry {
  static constexpr uint32_t kHasExpiry = uint32_t{1} << 31;

  uint64_t version;
  uint32_t key_len;
  uint32_t value_len_and_flags;  // Value length; kHasExpiry: an expiry follows the header.

  bool has_expiry() const { return (value_len_and_flags & kHasExpiry) != 0; }
  uint32_t value_len() const { return value_len_and_flags & ~kHasExpiry; }
  int64_t expire_unix_ms() const {  // 0 = never.
    if (!has_expiry()) return 0;
    int64_t ms;
    std::memcpy(&ms, this + 1, sizeof(ms));
    return ms;
  }
  // Only on an entry that has an expiry (the block has no room otherwise).
  void set_expire_unix_ms(int64_t ms) {
    DCHECK(has_expiry() && ms != 0);
    std::memcpy(this + 1, &ms, sizeof(ms));
  }
  char* bytes() { return reinterpret_cast<char*>(this + 1) + (has_expiry() ? 8 : 0); }
  const char* bytes() const {
    return reinterpret_cast<const char*>(this + 1) + (has_expiry() ? 8 : 0);
  }
  absl::string_view key() const { return {bytes(), key_len}; }
  absl::string_view value() const { return {bytes() + key_len, value_len()}; }
  bool ExpiredAt(int64_t now_unix_ms) const {
    if (!has_expiry()) return false;
    return expire_unix_ms() <= now_unix_ms;
  }
};
static_assert(sizeof(Entry) == 16, "Entry header should stay packed");

size_t EntrySize(size_t key_len, size_t value_len, bool has_expiry) {
  return sizeof(Entry) + (has_expiry ? 8 : 0) + key_len + value_len;
}

// What glibc's malloc takes for an n-byte request: an 8-byte size word, rounded up
// to 16, at least 32. Other allocators differ a little; this is an estimate.
uint64_t MallocBytes(size_t n) { return std::max<uint64_t>(32, (n + 8 + 15) & ~uint64_t{15}); }

uint64_t EntryBytes(const Entry* e) {
  return MallocBytes(EntrySize(e->key_len, e->value_len(), e->has_expiry()));
}

void CopyBytes(char* to, absl::string_view from) {
  if (!from.empty()) std::memcpy(to, from.data(), from.size());  // data() may be null.
}

Entry* NewEntry(absl::string_view key, absl::string_view value, uint64_t version,
                int64_t expire_unix_ms) {
  CHECK_LE(key.size(), std::numeric_limits<uint32_t>::max());
  // The top bit of the length word is the expiry flag: values stay below 2 GiB
  // (the request limit is far lower).
  CHECK_LT(value.size(), size_t{Entry::kHasExpiry});
  const bool has_expiry = expire_unix_ms != 0;
  void* block = ::operator new(EntrySize(key.size(), value.size(), has_expiry));
  Entry* e = new (block)
      Entry{version, static_cast<uint32_t>(key.size()),
            static_cast<uint32_t>(value.size()) | (has_expiry ? Entry::kHasExpiry : uint32_t{0})};
  if (has_expiry) e->set_expire_unix_ms(expire_unix_ms);
  CopyBytes(e->bytes(), key);
  CopyBytes(e->bytes() + key.size(), value);
  return e;
}

// Entry is trivially destructible; its bytes live in the same block.
void FreeEntry(Entry* e) { ::operator delete(e); }

uint64_t HashKey(absl::string_view key) { return XXH3_64bits(key.data(), key.size()); }

// A lookup key carrying its hash, computed once per call and used both to pick the
// stripe and to probe the stripe's table.
struct KeyRef {
  absl::string_view key;
  uint64_t hash;
};

// The table stores only Entry pointers and finds them by key. absl's Swiss table uses
// the hash as given (no extra mixing), so it must be a good hash in every bit: XXH3 is.
struct EntryHash {
  using is_transparent = void;
  size_t operator()(const Entry* e) const { return HashKey(e->key()); }
  size_t operator()(const KeyRef& k) const { return k.hash; }
};

struct EntryEq {
  using is_transparent = void;
  bool operator()(const Entry* a, const Entry* b) const { return a->key() == b->key(); }
  bool operator()(const Entry* a, const KeyRef& b) const { return a->key() == b.key; }
  bool operator()(const KeyRef& a, const Entry* b) const { return a.key == b->key(); }
};

// The expiry index orders entries with a TTL by expiry; the pointer only breaks ties.
struct Expiry {
  int64_t unix_ms;
  Entry* entry;
};

struct ExpiryOrder {
  bool operator()(const Expiry& a, const Expiry& b) const {
    if (a.unix_ms != b.unix_ms) return a.unix_ms < b.unix_ms;
    return std::less<const Entry*>()(a.entry, b.entry);
  }
};

// A 16-byte element in B-tree nodes that are partly empty, plus the inner nodes.
// tools/bench/map_memory.cc measured 19 bytes per key for expiries inserted in order
// and 23 for scrambled ones.
constexpr uint64_t kExpiryIndexBytesPerEntry = 24;

// Bytes of a Swiss table's backing array: one control byte per slot plus a group of
// cloned ones (16 in all), padded to the slot alignment, then the slots.
uint64_t TableBytes(size_t capacity) {
  if (capacity == 0) return 0;
  const size_t control = (capacity + 16 + alignof(Entry*) - 1) & ~(alignof(Entry*) - 1);
  return MallocBytes(control + capacity * sizeof(Entry*));
}

}  // namespace

// Aligned to a cache line so that the locks of neighbouring stripes do not share one.
struct alignas(64) KvMap::Stripe {
  mutable absl::Mutex mu;
  absl::flat_hash_set<Entry*, EntryHash, EntryEq> entries ABSL_GUARDED_BY(mu);
  absl::btree_set<Expiry, ExpiryOrder> expiry ABSL_GUARDED_BY(mu);
  uint64_t entry_bytes ABSL_GUARDED_BY(mu) = 0;  // Sum of EntryBytes over `entries`.

  uint64_t MemoryBytes() const ABSL_SHARED_LOCKS_REQUIRED(mu) {
    return entry_bytes + TableBytes(entries.capacity()) + expiry.size() * kExpiryIndexBytesPerEntry;
  }

  // Accounts for an entry just placed in `entries`.
  void Track(Entry* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    entry_bytes += EntryBytes(e);
    if (e->has_expiry()) expiry.insert({e->expire_unix_ms(), e});
  }

  // Forgets an entry that is leaving `entries`, before it is freed.
  void Untrack(Entry* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    entry_bytes -= EntryBytes(e);
    if (e->has_expiry()) CHECK_EQ(expiry.erase({e->expire_unix_ms(), e}), 1u);
  }

  void FreeAll() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (Entry* e : entries) FreeEntry(e);
    entries.clear();
    expiry.clear();
    entry_bytes = 0;
  }
};

KvMap::KvMap(size_t stripes) : stripe_count_(stripes), stripes_(new Stripe[stripes]) {
  CHECK_GT(stripes, 0u);
}

KvMap::~KvMap() {
  for (size_t i = 0; i < stripe_count_; ++i) {
    absl::MutexLock lock(&stripes_[i].mu);
    stripes_[i].FreeAll();
  }
}

KvMap::Stripe& KvMap::StripeFor(uint64_t key_hash) const { return stripes_[StripeIndex(key_hash)]; }

size_t KvMap::StripeIndex(uint64_t key_hash) const {
  // Maps the high 32 bits onto [0, stripe_count_) without a division. The map
  // is monotonic in the hash, which Scan relies on: each stripe owns one
  // contiguous range of hashes, in stripe order.
  return static_cast<size_t>(((key_hash >> 32) * stripe_count_) >> 32);
}

uint64_t KvMap::StripeStart(size_t stripe) const {
  // The smallest high half h with h * count >= stripe * 2^32, i.e. the
  // ceiling of stripe * 2^32 / count (below 2^32 for stripe < count).
  const uint64_t high = ((uint64_t{stripe} << 32) + stripe_count_ - 1) / stripe_count_;
  return high << 32;
}

bool KvMap::Get(absl::string_view key, int64_t now_unix_ms, std::string* value, uint64_t* version,
                int64_t* expire_unix_ms) const {
  const KeyRef ref{key, HashKey(key)};
  Stripe& s = StripeFor(ref.hash);
  absl::ReaderMutexLock lock(&s.mu);
  auto it = s.entries.find(ref);
  if (it == s.entries.end() || (*it)->ExpiredAt(now_unix_ms)) return false;
  const Entry* e = *it;
  if (value != nullptr) value->assign(e->value().data(), e->value().size());
  if (version != nullptr) *version = e->version;
  if (expire_unix_ms != nullptr) *expire_unix_ms = e->expire_unix_ms();
  return true;
}

uint64_t KvMap::Version(absl::string_view key, int64_t now_unix_ms) const {
  const KeyRef ref{key, HashKey(key)};
  Stripe& s = StripeFor(ref.hash);
  absl::ReaderMutexLock lock(&s.mu);
  auto it = s.entries.find(ref);
  if (it == s.entries.end() || (*it)->ExpiredAt(now_unix_ms)) return 0;
  return (*it)->version;
}

void KvMap::Put(absl::string_view key, absl::string_view value, uint64_t version,
                int64_t expire_unix_ms) {
  const KeyRef ref{key, HashKey(key)};
  Stripe& s = StripeFor(ref.hash);
  absl::MutexLock lock(&s.mu);
  auto it = s.entries.find(ref);
  if (it == s.entries.end()) {
    Entry* e = NewEntry(key, value, version, expire_unix_ms);
    s.entries.insert(e);
    s.Track(e);
    return;
  }
  Entry* old = *it;
  if (old->value_len() == value.size() && old->has_expiry() == (expire_unix_ms != 0)) {
    // Same block layout: rewrite in place and skip the allocator. Readers hold
    // the stripe's read lock, so none sees the value half-written.
    if (old->expire_unix_ms() != expire_unix_ms) {
      s.Untrack(old);
      old->set_expire_unix_ms(expire_unix_ms);
      s.Track(old);
    }
    old->version = version;
    CopyBytes(old->bytes() + old->key_len, value);
    return;
  }
  Entry* e = NewEntry(key, value, version, expire_unix_ms);
  s.Untrack(old);
  // Same key, hence same hash and slot: swapping the pointer keeps the table valid
  // and saves an erase and a second probe. Only the iterator is const, not the slot.
  const_cast<Entry*&>(*it) = e;
  FreeEntry(old);
  s.Track(e);
}

bool KvMap::Erase(absl::string_view key) {
  const KeyRef ref{key, HashKey(key)};
  Stripe& s = StripeFor(ref.hash);
  absl::MutexLock lock(&s.mu);
  auto it = s.entries.find(ref);
  if (it == s.entries.end()) return false;
  Entry* e = *it;
  s.entries.erase(it);
  s.Untrack(e);
  FreeEntry(e);
  return true;
}

size_t KvMap::EvictExpired(int64_t now_unix_ms, size_t max) {
  size_t evicted = 0;
  size_t i = evict_cursor_.load(std::memory_order_relaxed) % stripe_count_;
  for (size_t visited = 0; visited < stripe_count_ && evicted < max; ++visited) {
    Stripe& s = stripes_[i];
    {
      absl::MutexLock lock(&s.mu);
      while (evicted < max && !s.expiry.empty() && s.expiry.begin()->unix_ms <= now_unix_ms) {
        Entry* e = s.expiry.begin()->entry;
        CHECK_EQ(s.entries.erase(e), 1u) << "expiry index names an entry the table lacks";
        s.Untrack(e);
        FreeEntry(e);
        ++evicted;
      }
    }
    // Out of budget: the next call starts here, since this stripe may hold more.
    if (evicted == max) break;
    i = (i + 1) % stripe_count_;
  }
  evict_cursor_.store(i, std::memory_order_relaxed);
  return evicted;
}

void KvMap::ForEach(int64_t now_unix_ms, const std::function<void(const Item&)>& fn) const {
  for (size_t i = 0; i < stripe_count_; ++i) {
    Stripe& s = stripes_[i];
    absl::ReaderMutexLock lock(&s.mu);
    for (const Entry* e : s.entries) {
      if (e->ExpiredAt(now_unix_ms)) continue;
      fn(Item{e->key(), e->value(), e->version, e->expire_unix_ms()});
    }
  }
}

namespace {

// An entry found by a scan, with the hash it is ordered by.
struct ScanCandidate {
  uint64_t hash;
  const Entry* entry;
};

bool ScanOrder(const ScanCandidate& a, const ScanCandidate& b) {
  if (a.hash != b.hash) return a.hash < b.hash;
  return a.entry->key() < b.entry->key();
}

// Whether (hash, key) comes after `from` in scan order.
bool AfterPosition(uint64_t hash, absl::string_view key, const KvMap::ScanPosition& from) {
  if (hash != from.hash) return hash > from.hash;
  return !from.after_key.has_value() || key > *from.after_key;
}

}  // namespace

KvMap::ScanPage KvMap::Scan(const ScanPosition& from, int64_t now_unix_ms,
                            const ScanOptions& options) const {
  const size_t limit = std::max<size_t>(1, options.limit);
  ScanPage page;
  size_t page_bytes = 0;
  size_t visited = 0;
  ScanPosition position = from;
  std::vector<ScanCandidate> candidates;
  for (size_t stripe = StripeIndex(position.hash);; ++stripe) {
    // Up to `room` entries of this stripe come next; one more says whether the
    // page ends inside a run of equal hashes.
    const size_t room = limit - page.entries.size();
    const size_t keep = room + 1;
    candidates.clear();
    {
      const Stripe& s = stripes_[stripe];
      absl::ReaderMutexLock lock(&s.mu);
      visited += s.entries.size();
      for (const Entry* e : s.entries) {
        if (e->ExpiredAt(now_unix_ms) || !absl::StartsWith(e->key(), options.prefix)) continue;
        const uint64_t hash = HashKey(e->key());
        if (!AfterPosition(hash, e->key(), position)) continue;
        candidates.push_back({hash, e});
        // Keep only the smallest `keep`, trimming in batches: linear overall.
        if (candidates.size() >= 2 * keep + 64) {
          std::nth_element(candidates.begin(), candidates.begin() + keep, candidates.end(),
                           ScanOrder);
          candidates.resize(keep);
        }
      }
      std::sort(candidates.begin(), candidates.end(), ScanOrder);
      // Copied out under the lock: an entry may be freed as soon as it is released.
      size_t taken = 0;
      for (; taken < candidates.size() && taken < room; ++taken) {
        const Entry* e = candidates[taken].entry;
        const size_t value_bytes = options.keys_only ? 0 : e->value_len();
        const size_t bytes = ScanEntryBytes(e->key_len, value_bytes);
        if (!page.entries.empty() && page_bytes + bytes > options.max_bytes) break;
        page_bytes += bytes;
        ScannedEntry& out = page.entries.emplace_back();
        out.key.assign(e->key().data(), e->key().size());
        if (!options.keys_only) out.value.assign(e->value().data(), e->value().size());
        out.version = e->version;
        out.expire_unix_ms = e->expire_unix_ms();
      }
      if (taken < candidates.size()) {
        // The page is full inside this stripe: the next one starts right after
        // the last entry taken, which the first entry left out shows how to
        // name; or, when none of this stripe fit, where this stripe started.
        if (taken == 0) {
          page.next = std::move(position);
          return page;
        }
        const ScanCandidate& last = candidates[taken - 1];
        if (candidates[taken].hash == last.hash) {
          page.next = ScanPosition{last.hash, std::string(last.entry->key())};
        } else {
          page.next = ScanPosition{last.hash + 1, std::nullopt};  // < next hash: no overflow.
        }
        return page;
      }
    }
    // This stripe holds nothing more after the page.
    if (stripe + 1 == stripe_count_) return page;  // Done: next stays empty.
    position = ScanPosition{StripeStart(stripe + 1), std::nullopt};
    if (page.entries.size() == limit || visited >= options.max_visits) {
      page.next = std::move(position);
      return page;
    }
  }
}

void KvMap::Clear() {
  for (size_t i = 0; i < stripe_count_; ++i) {
    absl::MutexLock lock(&stripes_[i].mu);
    stripes_[i].FreeAll();
  }
}

size_t KvMap::Size() const {
  size_t n = 0;
  for (size_t i = 0; i < stripe_count_; ++i) {
    absl::ReaderMutexLock lock(&stripes_[i].mu);
    n += stripes_[i].entries.size();
  }
  return n;
}

uint64_t KvMap::MemoryBytes() const {
  uint64_t bytes = sizeof(*this) + stripe_count_ * sizeof(Stripe);
  for (size_t i = 0; i < stripe_count_; ++i) {
    absl::ReaderMutexLock lock(&stripes_[i].mu);
    bytes += stripes_[i].MemoryBytes();
  }
  return bytes;
}

}  // namespace kvstore
