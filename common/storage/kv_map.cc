#include "common/storage/kv_map.h"

#include <xxhash.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <limits>
#include <new>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "common/storage/entry_slabs.h"
#include "glog/logging.h"

namespace kvstore {
namespace {

// One block per key: a 14-byte header, then the expiry only if the key has
// one, the key's length only if it does not fit the header, the key bytes and
// the value bytes. Two std::string members would spend 64 bytes on string
// headers before any data; an expiry field in every entry would spend 8 bytes
// on each key without a TTL, most of them; a 4-byte key length 2 bytes on
// keys the API caps at 4 KiB (docs/performance.md).
struct Entry {
  static constexpr size_t kHeaderBytes = 14;
  static constexpr uint32_t kHasExpiry = uint32_t{1} << 31;
  // short_key_len of a key of this length or more: its length follows the header.
  static constexpr uint16_t kLongKey = 0xffff;

  uint64_t version;
  uint32_t value_len_and_flags;  // Value length; kHasExpiry: an expiry follows the header.
  uint16_t short_key_len;
  char tail[2];  // The first bytes after the header; the block goes on.

  bool has_expiry() const { return (value_len_and_flags & kHasExpiry) != 0; }
  uint32_t value_len() const { return value_len_and_flags & ~kHasExpiry; }
  const char* after_header() const { return reinterpret_cast<const char*>(this) + kHeaderBytes; }
  char* after_header() { return reinterpret_cast<char*>(this) + kHeaderBytes; }
  int64_t expire_unix_ms() const {  // 0 = never.
    if (!has_expiry()) return 0;
    int64_t ms;
    std::memcpy(&ms, after_header(), sizeof(ms));
    return ms;
  }
  size_t key_len() const {
    if (short_key_len != kLongKey) return short_key_len;
    uint32_t len;
    std::memcpy(&len, after_header() + (has_expiry() ? 8 : 0), sizeof(len));
    return len;
  }
  const char* bytes() const {
    return after_header() + (has_expiry() ? 8 : 0) + (short_key_len == kLongKey ? 4 : 0);
  }
  absl::string_view key() const { return {bytes(), key_len()}; }
  absl::string_view value() const { return {bytes() + key_len(), value_len()}; }
  bool ExpiredAt(int64_t now_unix_ms) const {
    if (!has_expiry()) return false;
    return expire_unix_ms() <= now_unix_ms;
  }
};
static_assert(sizeof(Entry) == 16 && offsetof(Entry, tail) == Entry::kHeaderBytes,
              "Entry header should stay packed");

size_t EntrySize(size_t key_len, size_t value_len, bool has_expiry) {
  return Entry::kHeaderBytes + (has_expiry ? 8 : 0) + (key_len >= Entry::kLongKey ? 4 : 0) +
         key_len + value_len;
}

void CopyBytes(char* to, absl::string_view from) {
  if (!from.empty()) std::memcpy(to, from.data(), from.size());  // data() may be null.
}

// Writes an entry into a block of at least EntrySize bytes (a new one, or the
// entry's own block when the new layout fits it).
Entry* WriteEntry(char* block, absl::string_view key, absl::string_view value, uint64_t version,
                  int64_t expire_unix_ms) {
  CHECK_LE(key.size(), std::numeric_limits<uint32_t>::max());
  // The top bit of the length word is the expiry flag: values stay below 2 GiB
  // (the request limit is far lower).
  CHECK_LT(value.size(), size_t{Entry::kHasExpiry});
  const bool has_expiry = expire_unix_ms != 0;
  const bool long_key = key.size() >= Entry::kLongKey;
  Entry* e = reinterpret_cast<Entry*>(block);
  e->version = version;
  e->value_len_and_flags =
      static_cast<uint32_t>(value.size()) | (has_expiry ? Entry::kHasExpiry : uint32_t{0});
  e->short_key_len = long_key ? Entry::kLongKey : static_cast<uint16_t>(key.size());
  char* p = e->after_header();
  if (has_expiry) {
    std::memcpy(p, &expire_unix_ms, sizeof(expire_unix_ms));
    p += sizeof(expire_unix_ms);
  }
  if (long_key) {
    const uint32_t len = static_cast<uint32_t>(key.size());
    std::memcpy(p, &len, sizeof(len));
    p += sizeof(len);
  }
  CopyBytes(p, key);
  CopyBytes(p + key.size(), value);
  return e;
}

uint64_t HashKey(absl::string_view key) { return XXH3_64bits(key.data(), key.size()); }

const Entry* EntryIn(const EntrySlabs& slabs, EntryHandle h) {
  return reinterpret_cast<const Entry*>(slabs.Block(h));
}

// A lookup key carrying its hash, computed once per call and used both to pick the
// stripe and to probe the stripe's table.
struct KeyRef {
  absl::string_view key;
  uint64_t hash;
};

// The table stores only entry handles and finds them by key, reading the key
// from the stripe's slabs. absl's Swiss table uses the hash as given (no extra
// mixing), so it must be a good hash in every bit: XXH3 is.
struct EntryHash {
  using is_transparent = void;
  const EntrySlabs* slabs = nullptr;
  size_t operator()(EntryHandle h) const { return HashKey(EntryIn(*slabs, h)->key()); }
  size_t operator()(const KeyRef& k) const { return k.hash; }
};

struct EntryEq {
  using is_transparent = void;
  const EntrySlabs* slabs = nullptr;
  // One key has one entry, so handles are equal exactly when their keys are.
  bool operator()(EntryHandle a, EntryHandle b) const { return a == b; }
  bool operator()(EntryHandle a, const KeyRef& b) const {
    return EntryIn(*slabs, a)->key() == b.key;
  }
  bool operator()(const KeyRef& a, EntryHandle b) const {
    return a.key == EntryIn(*slabs, b)->key();
  }
};

// The expiry index orders entries with a TTL by expiry; the handle only breaks ties.
struct Expiry {
  int64_t unix_ms;
  EntryHandle entry;
};

struct ExpiryOrder {
  bool operator()(const Expiry& a, const Expiry& b) const {
    if (a.unix_ms != b.unix_ms) return a.unix_ms < b.unix_ms;
    return a.entry < b.entry;
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
  const size_t control = (capacity + 16 + alignof(EntryHandle) - 1) & ~(alignof(EntryHandle) - 1);
  return EntrySlabs::HeapBytes(control + capacity * sizeof(EntryHandle));
}

}  // namespace

// Aligned to a cache line so that the locks of neighbouring stripes do not share one.
struct alignas(64) KvMap::Stripe {
  Stripe() : entries(0, EntryHash{&slabs}, EntryEq{&slabs}) {}

  mutable absl::Mutex mu;
  // The entries' memory; declared before the table, whose hash reads it.
  EntrySlabs slabs ABSL_GUARDED_BY(mu);
  absl::flat_hash_set<EntryHandle, EntryHash, EntryEq> entries ABSL_GUARDED_BY(mu);
  absl::btree_set<Expiry, ExpiryOrder> expiry ABSL_GUARDED_BY(mu);

  const Entry* At(EntryHandle h) const ABSL_SHARED_LOCKS_REQUIRED(mu) { return EntryIn(slabs, h); }

  uint64_t MemoryBytes() const ABSL_SHARED_LOCKS_REQUIRED(mu) {
    return slabs.MemoryBytes() + TableBytes(entries.capacity()) +
           expiry.size() * kExpiryIndexBytesPerEntry;
  }

  void Track(EntryHandle h, int64_t expire_unix_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (expire_unix_ms != 0) expiry.insert({expire_unix_ms, h});
  }
  void Untrack(EntryHandle h, int64_t expire_unix_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (expire_unix_ms != 0) CHECK_EQ(expiry.erase({expire_unix_ms, h}), 1u);
  }

  // Frees an entry that has left the table (or is leaving it: its slot is
  // rewritten next), then compacts the slabs if that left them too sparse.
  void Free(EntryHandle h) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    slabs.Free(h);
    if (!slabs.compaction_due()) return;
    // Readers hold the read lock while they touch an entry and copy out what
    // they keep (Get, ForEach, Scan), so under the write lock nothing points
    // at a block that moves. Scan positions name hashes, not blocks.
    slabs.Compact([this](EntryHandle from, EntryHandle to) ABSL_NO_THREAD_SAFETY_ANALYSIS {
      const Entry* e = At(to);
      auto it = entries.find(KeyRef{e->key(), HashKey(e->key())});
      CHECK(it != entries.end() && *it == from) << "compaction moved an entry the table lacks";
      const_cast<EntryHandle&>(*it) = to;  // Same key, same slot.
      if (e->has_expiry()) {
        Untrack(from, e->expire_unix_ms());
        Track(to, e->expire_unix_ms());
      }
    });
  }

  void FreeAll() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    entries.clear();
    expiry.clear();
    slabs.Clear();
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
  if (it == s.entries.end()) return false;
  const Entry* e = s.At(*it);
  if (e->ExpiredAt(now_unix_ms)) return false;
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
  if (it == s.entries.end()) return 0;
  const Entry* e = s.At(*it);
  return e->ExpiredAt(now_unix_ms) ? 0 : e->version;
}

void KvMap::Put(absl::string_view key, absl::string_view value, uint64_t version,
                int64_t expire_unix_ms) {
  const KeyRef ref{key, HashKey(key)};
  Stripe& s = StripeFor(ref.hash);
  const size_t size = EntrySize(key.size(), value.size(), expire_unix_ms != 0);
  absl::MutexLock lock(&s.mu);
  // One probe finds the key or the slot a new key goes to. The slot is filled
  // with a placeholder, then with the real handle before the table is used
  // again (its hash reads the entry, which does not exist yet).
  bool inserted = false;
  auto it = s.entries.lazy_emplace(ref, [&inserted](const auto& construct) {
    inserted = true;
    construct(EntryHandle{0});
  });
  // Only the iterator is const, not the slot; rewriting it with a handle of
  // the same key keeps the table valid.
  EntryHandle& slot = const_cast<EntryHandle&>(*it);
  if (inserted) {
    slot = s.slabs.Allocate(size);
    WriteEntry(s.slabs.Block(slot), key, value, version, expire_unix_ms);
    s.Track(slot, expire_unix_ms);
    return;
  }
  const EntryHandle old = slot;
  const int64_t old_expire = s.At(old)->expire_unix_ms();
  if (EntrySlabs::BlockBytesFor(size) == s.slabs.BlockBytes(old)) {
    // The new entry has the old one's block size: rewrite it in place. Readers
    // hold the stripe's read lock, so none sees it half-written.
    if (old_expire != expire_unix_ms) {
      s.Untrack(old, old_expire);
      s.Track(old, expire_unix_ms);
    }
    WriteEntry(s.slabs.Block(old), key, value, version, expire_unix_ms);
    return;
  }
  s.Untrack(old, old_expire);
  slot = s.slabs.Allocate(size);
  WriteEntry(s.slabs.Block(slot), key, value, version, expire_unix_ms);
  s.Track(slot, expire_unix_ms);
  s.Free(old);
}

bool KvMap::Erase(absl::string_view key) {
  const KeyRef ref{key, HashKey(key)};
  Stripe& s = StripeFor(ref.hash);
  absl::MutexLock lock(&s.mu);
  auto it = s.entries.find(ref);
  if (it == s.entries.end()) return false;
  const EntryHandle h = *it;
  s.entries.erase(it);
  s.Untrack(h, s.At(h)->expire_unix_ms());
  s.Free(h);
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
        // Read afresh each time: a compaction in Free may have moved entries.
        const Expiry first = *s.expiry.begin();
        CHECK_EQ(s.entries.erase(first.entry), 1u) << "expiry index names an entry the table lacks";
        s.Untrack(first.entry, first.unix_ms);
        s.Free(first.entry);
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
    for (EntryHandle h : s.entries) {
      const Entry* e = s.At(h);
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
      for (EntryHandle h : s.entries) {
        const Entry* e = s.At(h);
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
        const size_t bytes = ScanEntryBytes(e->key_len(), value_bytes);
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

uint64_t KvMap::EntriesMoved() const {
  uint64_t n = 0;
  for (size_t i = 0; i < stripe_count_; ++i) {
    absl::ReaderMutexLock lock(&stripes_[i].mu);
    n += stripes_[i].slabs.moved_blocks();
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
