// Memory for the entries of one KvMap stripe, named by 32-bit handles so the
// stripe's table stores 4 bytes a key instead of an 8-byte pointer.
//
// Blocks of up to kMaxSlabBlockBytes come from slabs: one slab holds the
// blocks of one size class (8-byte steps) back to back, with no per-block
// header, and at most 64 of them (about 8 KiB). Larger blocks come from the
// heap, one allocation each. Why not malloc or a Debian allocator: glibc adds
// an 8-byte size word and rounds to 16 bytes (a 128-byte entry takes 144);
// jemalloc, mimalloc and tcmalloc space their size classes 16 bytes to a
// quarter apart (measured with the old map: 174-181 bytes a key against
// glibc's 163, docs/performance.md), and none gives a handle smaller than a
// pointer.
//
// Stranding: a freed slot serves only its own size class. A slab whose last
// block is freed goes back to the heap at once. Beyond that, once a class's
// free slots reach a quarter of its slots and two slabs' worth, the class is
// due for compaction: Compact moves blocks from the class's emptiest slabs into
// its fullest, until at most one of its slabs has free slots. So a class holds
// at most max(4/3 x its live blocks, its live blocks + 2 slabs) of slab
// memory, up to what the mutations since compaction_due() turned true added.
//
// Not thread-safe: the owner serialises every call. Block() and BlockBytes()
// are const and may run concurrently with each other (KvMap calls them under
// its stripe's reader lock); everything else needs exclusive access.
#ifndef KVSTORE_COMMON_STORAGE_ENTRY_SLABS_H_
#define KVSTORE_COMMON_STORAGE_ENTRY_SLABS_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/functional/function_ref.h"

namespace kvstore {

// Names one block of an EntrySlabs; meaningful only to the EntrySlabs that
// returned it, until the block is freed or moved.
using EntryHandle = uint32_t;

class EntrySlabs {
 public:
  // Slab blocks are multiples of this, and aligned to it.
  static constexpr size_t kGranularity = 8;
  // Larger blocks are heap allocations: at 1 KiB glibc's overhead is 2 % at
  // most, and a slab would then hold too few blocks to be worth it.
  static constexpr size_t kMaxSlabBlockBytes = 1024;
  static constexpr size_t kMaxBlocksPerSlab = 64;
  // Aim for a slab's size; classes above kSlabTargetBytes / 64 hold fewer blocks.
  static constexpr size_t kSlabTargetBytes = 8192;
  // What one Compact call moves at most, so a stripe is never held for long.
  static constexpr size_t kMaxMovesPerCompaction = 1024;

  EntrySlabs();
  ~EntrySlabs();
  EntrySlabs(const EntrySlabs&) = delete;
  EntrySlabs& operator=(const EntrySlabs&) = delete;

  // What glibc's malloc takes for an n-byte request: an 8-byte size word,
  // rounded up to 16, at least 32 (other allocators differ a little).
  static uint64_t HeapBytes(size_t n);
  // The size of the block Allocate(bytes) returns: rounded up to the class
  // (8-byte steps) up to kMaxSlabBlockBytes, exact above.
  static size_t BlockBytesFor(size_t bytes);

  // A block of BlockBytesFor(bytes) bytes (at least one), 8-byte aligned. Its
  // address is stable until it is freed or a Compact moves it.
  EntryHandle Allocate(size_t bytes);
  // Returns the block; may make compaction_due().
  void Free(EntryHandle handle);
  char* Block(EntryHandle handle) const;
  size_t BlockBytes(EntryHandle handle) const;

  // Whether some class holds too many free slots (see the top of this file).
  bool compaction_due() const { return !due_classes_.empty(); }
  // Moves up to kMaxMovesPerCompaction blocks of the due classes. For each,
  // copies the block's bytes to a new block, calls moved(from, to) while both
  // hold them (the owner re-points its references to `to`), then frees `from`.
  // Returns the number of blocks moved; compaction_due() is false once a
  // call finishes every due class.
  size_t Compact(absl::FunctionRef<void(EntryHandle from, EntryHandle to)> moved);

  // Frees every block.
  void Clear();

  // Bytes taken from the heap: slabs and big blocks as glibc's malloc counts
  // them, and this object's own tables.
  uint64_t MemoryBytes() const;
  // Blocks moved by Compact since construction.
  uint64_t moved_blocks() const { return moved_blocks_; }
  // Slabs held, and free slots in them (for tests and the benchmark).
  size_t slab_count() const { return slab_count_; }
  size_t free_slots() const;

 private:
  static constexpr uint32_t kBigBit = uint32_t{1} << 31;
  static constexpr int kSlotBits = 6;  // 64 slots, one 64-bit free mask.
  static constexpr uint32_t kNone = ~uint32_t{0};
  static constexpr size_t kClasses = kMaxSlabBlockBytes / kGranularity;

  struct Slab {
    char* memory = nullptr;  // Null while this entry of slabs_ is unused.
    uint64_t free_mask = 0;  // Bit i: slot i is free.
    // The class's list of slabs with a free slot; for an unused entry, `next`
    // links the unused entries.
    uint32_t next = kNone;
    uint32_t prev = kNone;
    uint16_t block_bytes = 0;
    uint8_t slots = 0;
  };
  struct SizeClass {
    uint32_t nonfull_head = kNone;  // Slabs with at least one free slot.
    uint32_t slabs = 0;
    uint32_t free_slots = 0;
    bool due = false;
  };
  struct BigBlock {
    char* memory = nullptr;
    size_t bytes = 0;
  };

  static size_t ClassOf(size_t block_bytes) { return block_bytes / kGranularity - 1; }
  static size_t SlotsFor(size_t block_bytes);
  static size_t SlabBytes(size_t block_bytes) { return SlotsFor(block_bytes) * block_bytes; }
  EntryHandle AllocateInClass(size_t cls);
  uint32_t NewSlab(size_t cls);
  void ReleaseSlab(uint32_t index, size_t cls);
  void Link(uint32_t index, size_t cls);
  void Unlink(uint32_t index, size_t cls);
  void CheckDue(size_t cls);
  // Compacts one class with at most `budget` moves; true when it is done.
  bool CompactClass(size_t cls, size_t budget, size_t* moves,
                    absl::FunctionRef<void(EntryHandle, EntryHandle)> moved);

  std::vector<Slab> slabs_;
  uint32_t unused_slab_head_ = kNone;
  size_t slab_count_ = 0;
  uint64_t slab_bytes_ = 0;  // Heap bytes of the live slabs.
  SizeClass classes_[kClasses];
  std::vector<uint16_t> due_classes_;
  std::vector<BigBlock> big_;
  std::vector<uint32_t> unused_big_;
  uint64_t big_bytes_ = 0;
  uint64_t moved_blocks_ = 0;
};

}  // namespace kvstore

#endif  // KVSTORE_COMMON_STORAGE_ENTRY_SLABS_H_
