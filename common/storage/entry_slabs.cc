#include "common/storage/entry_slabs.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "glog/logging.h"

namespace kvstore {
namespace {

uint64_t FullMask(size_t slots) { return slots == 64 ? ~uint64_t{0} : (uint64_t{1} << slots) - 1; }

}  // namespace

EntrySlabs::EntrySlabs() = default;

EntrySlabs::~EntrySlabs() { Clear(); }

uint64_t EntrySlabs::HeapBytes(size_t n) {
  return std::max<uint64_t>(32, (n + 8 + 15) & ~uint64_t{15});
}

size_t EntrySlabs::BlockBytesFor(size_t bytes) {
  if (bytes > kMaxSlabBlockBytes) return bytes;
  return std::max(kGranularity, (bytes + kGranularity - 1) & ~(kGranularity - 1));
}

size_t EntrySlabs::SlotsFor(size_t block_bytes) {
  return std::clamp<size_t>(kSlabTargetBytes / block_bytes, 1, kMaxBlocksPerSlab);
}

EntryHandle EntrySlabs::Allocate(size_t bytes) {
  const size_t block_bytes = BlockBytesFor(bytes);
  if (block_bytes <= kMaxSlabBlockBytes) return AllocateInClass(ClassOf(block_bytes));
  uint32_t index;
  if (!unused_big_.empty()) {
    index = unused_big_.back();
    unused_big_.pop_back();
  } else {
    CHECK_LT(big_.size(), size_t{kBigBit}) << "too many big entries in one stripe";
    index = static_cast<uint32_t>(big_.size());
    big_.emplace_back();
  }
  big_[index] = BigBlock{static_cast<char*>(::operator new(block_bytes)), block_bytes};
  big_bytes_ += HeapBytes(block_bytes);
  return kBigBit | index;
}

EntryHandle EntrySlabs::AllocateInClass(size_t cls) {
  SizeClass& c = classes_[cls];
  uint32_t index = c.nonfull_head;
  if (index == kNone) index = NewSlab(cls);
  Slab& s = slabs_[index];
  const int slot = __builtin_ctzll(s.free_mask);
  s.free_mask &= s.free_mask - 1;
  --c.free_slots;
  if (s.free_mask == 0) Unlink(index, cls);
  return index << kSlotBits | static_cast<uint32_t>(slot);
}

uint32_t EntrySlabs::NewSlab(size_t cls) {
  uint32_t index;
  if (unused_slab_head_ != kNone) {
    index = unused_slab_head_;
    unused_slab_head_ = slabs_[index].next;
  } else {
    CHECK_LT(slabs_.size(), size_t{kBigBit >> kSlotBits}) << "too many slabs in one stripe";
    index = static_cast<uint32_t>(slabs_.size());
    slabs_.emplace_back();
  }
  const size_t block_bytes = (cls + 1) * kGranularity;
  const size_t slots = SlotsFor(block_bytes);
  Slab& s = slabs_[index];
  s.memory = static_cast<char*>(::operator new(SlabBytes(block_bytes)));
  s.free_mask = FullMask(slots);
  s.block_bytes = static_cast<uint16_t>(block_bytes);
  s.slots = static_cast<uint8_t>(slots);
  SizeClass& c = classes_[cls];
  ++c.slabs;
  c.free_slots += slots;
  ++slab_count_;
  slab_bytes_ += HeapBytes(SlabBytes(block_bytes));
  Link(index, cls);
  return index;
}

void EntrySlabs::ReleaseSlab(uint32_t index, size_t cls) {
  Slab& s = slabs_[index];
  SizeClass& c = classes_[cls];
  --c.slabs;
  c.free_slots -= s.slots;
  --slab_count_;
  slab_bytes_ -= HeapBytes(SlabBytes(s.block_bytes));
  ::operator delete(s.memory);
  s = Slab{};
  s.next = unused_slab_head_;
  unused_slab_head_ = index;
}

void EntrySlabs::Link(uint32_t index, size_t cls) {
  SizeClass& c = classes_[cls];
  Slab& s = slabs_[index];
  s.prev = kNone;
  s.next = c.nonfull_head;
  if (c.nonfull_head != kNone) slabs_[c.nonfull_head].prev = index;
  c.nonfull_head = index;
}

void EntrySlabs::Unlink(uint32_t index, size_t cls) {
  Slab& s = slabs_[index];
  if (s.prev != kNone) {
    slabs_[s.prev].next = s.next;
  } else {
    classes_[cls].nonfull_head = s.next;
  }
  if (s.next != kNone) slabs_[s.next].prev = s.prev;
  s.next = s.prev = kNone;
}

void EntrySlabs::Free(EntryHandle handle) {
  if ((handle & kBigBit) != 0) {
    const uint32_t index = handle & ~kBigBit;
    BigBlock& b = big_[index];
    DCHECK(b.memory != nullptr) << "double free of big block " << index;
    big_bytes_ -= HeapBytes(b.bytes);
    ::operator delete(b.memory);
    b = BigBlock{};
    unused_big_.push_back(index);
    return;
  }
  const uint32_t index = handle >> kSlotBits;
  const uint64_t bit = uint64_t{1} << (handle & ((1u << kSlotBits) - 1));
  Slab& s = slabs_[index];
  DCHECK(s.memory != nullptr && (s.free_mask & bit) == 0) << "double free of block " << handle;
  const size_t cls = ClassOf(s.block_bytes);
  const bool was_full = s.free_mask == 0;
  s.free_mask |= bit;
  ++classes_[cls].free_slots;
  if (s.free_mask == FullMask(s.slots)) {
    if (!was_full) Unlink(index, cls);
    ReleaseSlab(index, cls);
  } else if (was_full) {
    Link(index, cls);
  }
  CheckDue(cls);
}

void EntrySlabs::CheckDue(size_t cls) {
  SizeClass& c = classes_[cls];
  if (c.due) return;
  const size_t slots = SlotsFor((cls + 1) * kGranularity);
  if (c.free_slots >= 2 * slots && uint64_t{c.free_slots} * 4 >= uint64_t{c.slabs} * slots) {
    c.due = true;
    due_classes_.push_back(static_cast<uint16_t>(cls));
  }
}

char* EntrySlabs::Block(EntryHandle handle) const {
  if ((handle & kBigBit) != 0) return big_[handle & ~kBigBit].memory;
  const Slab& s = slabs_[handle >> kSlotBits];
  return s.memory + size_t{handle & ((1u << kSlotBits) - 1)} * s.block_bytes;
}

size_t EntrySlabs::BlockBytes(EntryHandle handle) const {
  if ((handle & kBigBit) != 0) return big_[handle & ~kBigBit].bytes;
  return slabs_[handle >> kSlotBits].block_bytes;
}

size_t EntrySlabs::Compact(absl::FunctionRef<void(EntryHandle from, EntryHandle to)> moved) {
  size_t moves = 0;
  while (!due_classes_.empty() && moves < kMaxMovesPerCompaction) {
    const size_t cls = due_classes_.back();
    if (!CompactClass(cls, kMaxMovesPerCompaction, &moves, moved)) break;
    classes_[cls].due = false;
    due_classes_.pop_back();
  }
  return moves;
}

bool EntrySlabs::CompactClass(size_t cls, size_t budget, size_t* moves,
                              absl::FunctionRef<void(EntryHandle, EntryHandle)> moved) {
  std::vector<uint32_t> nonfull;
  for (uint32_t i = classes_[cls].nonfull_head; i != kNone; i = slabs_[i].next) {
    nonfull.push_back(i);
  }
  // Fullest first: they receive, the emptiest give.
  std::sort(nonfull.begin(), nonfull.end(), [this](uint32_t a, uint32_t b) {
    const int free_a = __builtin_popcountll(slabs_[a].free_mask);
    const int free_b = __builtin_popcountll(slabs_[b].free_mask);
    return free_a != free_b ? free_a < free_b : a < b;
  });
  const size_t block_bytes = (cls + 1) * kGranularity;
  size_t to = 0;
  size_t from = nonfull.size();  // One past the giving slab.
  while (to + 1 < from && *moves < budget) {
    Slab& dst = slabs_[nonfull[to]];
    Slab& src = slabs_[nonfull[from - 1]];
    const uint64_t live = ~src.free_mask & FullMask(src.slots);
    // An empty slab is released as soon as it empties, and a full one is
    // not on the list: both can only appear here by a bug.
    DCHECK(live != 0 && dst.free_mask != 0);
    const int from_slot = __builtin_ctzll(live);
    const int to_slot = __builtin_ctzll(dst.free_mask);
    std::memcpy(dst.memory + size_t(to_slot) * block_bytes,
                src.memory + size_t(from_slot) * block_bytes, block_bytes);
    dst.free_mask &= ~(uint64_t{1} << to_slot);
    moved(nonfull[from - 1] << kSlotBits | static_cast<uint32_t>(from_slot),
          nonfull[to] << kSlotBits | static_cast<uint32_t>(to_slot));
    src.free_mask |= uint64_t{1} << from_slot;
    ++*moves;
    ++moved_blocks_;
    if (src.free_mask == FullMask(src.slots)) {
      ReleaseSlab(nonfull[from - 1], cls);
      nonfull[from - 1] = kNone;
      --from;
    }
    if (dst.free_mask == 0) ++to;
  }
  // Relink what still has room, fullest at the head where Allocate takes from.
  classes_[cls].nonfull_head = kNone;
  for (size_t i = nonfull.size(); i-- > 0;) {
    if (nonfull[i] != kNone && slabs_[nonfull[i]].free_mask != 0) Link(nonfull[i], cls);
  }
  return to + 1 >= from;
}

void EntrySlabs::Clear() {
  for (Slab& s : slabs_) ::operator delete(s.memory);  // Null for unused entries.
  for (BigBlock& b : big_) ::operator delete(b.memory);
  std::vector<Slab>().swap(slabs_);
  std::vector<BigBlock>().swap(big_);
  std::vector<uint32_t>().swap(unused_big_);
  std::vector<uint16_t>().swap(due_classes_);
  unused_slab_head_ = kNone;
  slab_count_ = 0;
  slab_bytes_ = 0;
  big_bytes_ = 0;
  for (SizeClass& c : classes_) c = SizeClass{};
}

size_t EntrySlabs::free_slots() const {
  size_t n = 0;
  for (const SizeClass& c : classes_) n += c.free_slots;
  return n;
}

uint64_t EntrySlabs::MemoryBytes() const {
  return slab_bytes_ + big_bytes_ + slabs_.capacity() * sizeof(Slab) +
         big_.capacity() * sizeof(BigBlock) + unused_big_.capacity() * sizeof(uint32_t) +
         due_classes_.capacity() * sizeof(uint16_t);
}

}  // namespace kvstore
