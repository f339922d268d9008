// EntrySlabs: size classes and their boundaries, reuse of freed slots, slabs
// returned when empty, big blocks, and compaction (what it moves, that the
// owner hears of every move while both copies are readable, and its bounds).
#include "common/storage/entry_slabs.h"

#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kvstore {
namespace {

// Blocks filled with their owner's id, so a test can tell whose bytes a block holds.
void Stamp(EntrySlabs& slabs, EntryHandle h, uint32_t id) {
  const size_t n = slabs.BlockBytes(h);
  char* p = slabs.Block(h);
  for (size_t i = 0; i + sizeof(id) <= n; i += sizeof(id)) std::memcpy(p + i, &id, sizeof(id));
}

// Whether every word of the block is `id` (so no neighbour wrote into it).
bool Holds(const EntrySlabs& slabs, EntryHandle h, uint32_t id) {
  const size_t n = slabs.BlockBytes(h);
  const char* p = slabs.Block(h);
  for (size_t i = 0; i + sizeof(id) <= n; i += sizeof(id)) {
    uint32_t got;
    std::memcpy(&got, p + i, sizeof(got));
    if (got != id) return false;
  }
  return true;
}

TEST(EntrySlabsTest, SizeClassesAreEightByteStepsUpToTheBigBlockThreshold) {
  EXPECT_EQ(EntrySlabs::BlockBytesFor(0), 8u);
  EXPECT_EQ(EntrySlabs::BlockBytesFor(1), 8u);
  EXPECT_EQ(EntrySlabs::BlockBytesFor(8), 8u);
  EXPECT_EQ(EntrySlabs::BlockBytesFor(9), 16u);
  EXPECT_EQ(EntrySlabs::BlockBytesFor(128), 128u);
  EXPECT_EQ(EntrySlabs::BlockBytesFor(129), 136u);
  EXPECT_EQ(EntrySlabs::BlockBytesFor(1023), 1024u);
  EXPECT_EQ(EntrySlabs::BlockBytesFor(EntrySlabs::kMaxSlabBlockBytes), 1024u);
  // Above the threshold: exactly what was asked, from the heap.
  EXPECT_EQ(EntrySlabs::BlockBytesFor(1025), 1025u);
  EXPECT_EQ(EntrySlabs::BlockBytesFor(5000), 5000u);
}

TEST(EntrySlabsTest, BlocksAtEveryBoundaryAreAlignedSizedAndDisjoint) {
  EntrySlabs slabs;
  const std::vector<size_t> sizes = {0,   1,    7,    8,    9,    15,   16,   17,   127,  128,
                                     129, 1016, 1017, 1023, 1024, 1025, 1031, 4096, 70000};
  std::vector<EntryHandle> handles;
  // Several of each, so neighbours in one slab exist.
  for (int round = 0; round < 3; ++round) {
    for (size_t size : sizes) {
      const EntryHandle h = slabs.Allocate(size);
      EXPECT_EQ(slabs.BlockBytes(h), EntrySlabs::BlockBytesFor(size)) << size;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(slabs.Block(h)) % EntrySlabs::kGranularity, 0u);
      Stamp(slabs, h, static_cast<uint32_t>(handles.size()));
      handles.push_back(h);
    }
  }
  EXPECT_EQ(std::set<EntryHandle>(handles.begin(), handles.end()).size(), handles.size());
  for (size_t i = 0; i < handles.size(); ++i) {
    EXPECT_TRUE(Holds(slabs, handles[i], static_cast<uint32_t>(i))) << "block " << i;
  }
  for (EntryHandle h : handles) slabs.Free(h);
  EXPECT_EQ(slabs.slab_count(), 0u);
}

TEST(EntrySlabsTest, FreedSlotIsReusedByItsOwnClassOnly) {
  EntrySlabs slabs;
  const EntryHandle a = slabs.Allocate(100);  // Class 104.
  const EntryHandle b = slabs.Allocate(100);
  const EntryHandle keep = slabs.Allocate(100);
  slabs.Free(a);
  EXPECT_EQ(slabs.Allocate(104), a) << "a freed slot of the class is taken first";
  slabs.Free(b);
  const size_t before = slabs.slab_count();
  // Another class does not take b's slot: it gets a slab of its own.
  const EntryHandle other = slabs.Allocate(112);
  EXPECT_EQ(slabs.slab_count(), before + 1);
  EXPECT_NE(slabs.Block(other), slabs.Block(b));
  EXPECT_EQ(slabs.free_slots(),
            1u + (EntrySlabs::kMaxBlocksPerSlab - 3) + (EntrySlabs::kMaxBlocksPerSlab - 1));
  EXPECT_EQ(slabs.Allocate(97), b) << "97 rounds up to the same class";
  slabs.Free(keep);
}

TEST(EntrySlabsTest, OneSlabHoldsUpToSixtyFourBlocksOfAClass) {
  EntrySlabs slabs;
  std::vector<EntryHandle> handles;
  for (size_t i = 0; i < EntrySlabs::kMaxBlocksPerSlab; ++i) handles.push_back(slabs.Allocate(128));
  EXPECT_EQ(slabs.slab_count(), 1u);
  EXPECT_EQ(slabs.free_slots(), 0u);
  // Contiguous: no header between blocks.
  for (size_t i = 1; i < handles.size(); ++i) {
    EXPECT_EQ(slabs.Block(handles[i]) - slabs.Block(handles[i - 1]), 128) << i;
  }
  handles.push_back(slabs.Allocate(128));
  EXPECT_EQ(slabs.slab_count(), 2u);
  // Large classes hold fewer blocks, about 8 KiB a slab.
  EntrySlabs large;
  for (int i = 0; i < 8; ++i) large.Allocate(1024);
  EXPECT_EQ(large.slab_count(), 1u);
  large.Allocate(1024);
  EXPECT_EQ(large.slab_count(), 2u);
}

TEST(EntrySlabsTest, ASlabGoesBackToTheHeapWhenItsLastBlockIsFreed) {
  EntrySlabs slabs;
  const uint64_t empty = slabs.MemoryBytes();
  std::vector<EntryHandle> handles;
  for (int i = 0; i < 200; ++i) handles.push_back(slabs.Allocate(128));
  EXPECT_EQ(slabs.slab_count(), 4u);
  const uint64_t full = slabs.MemoryBytes();
  EXPECT_GE(full - empty, 200u * 128);
  EXPECT_LE(full - empty, 4u * (8192 + 16) + 4 * 64);
  for (EntryHandle h : handles) slabs.Free(h);
  EXPECT_EQ(slabs.slab_count(), 0u);
  EXPECT_EQ(slabs.free_slots(), 0u);
  // Only the slab table's capacity (32 bytes an entry) remains.
  EXPECT_LE(slabs.MemoryBytes() - empty, 4u * 64);
}

TEST(EntrySlabsTest, BigBlocksComeFromTheHeapAndTheirIndexIsReused) {
  EntrySlabs slabs;
  const EntryHandle a = slabs.Allocate(EntrySlabs::kMaxSlabBlockBytes + 1);
  const EntryHandle b = slabs.Allocate(100'000);
  EXPECT_EQ(slabs.slab_count(), 0u);
  EXPECT_GE(slabs.MemoryBytes(), 101'025u);
  Stamp(slabs, a, 1);
  Stamp(slabs, b, 2);
  EXPECT_TRUE(Holds(slabs, a, 1));
  EXPECT_TRUE(Holds(slabs, b, 2));
  slabs.Free(a);
  EXPECT_LT(slabs.MemoryBytes(), 100'500u);
  EXPECT_EQ(slabs.Allocate(2000), a) << "the freed index is reused";
  EXPECT_FALSE(slabs.compaction_due()) << "big blocks are never compacted";
}

// Holds the live blocks as an owner does (a handle per id, an id per handle),
// and applies the moves compaction reports, checking each.
struct Owner {
  EntrySlabs* slabs;
  std::map<EntryHandle, uint32_t> id_of;
  std::map<uint32_t, EntryHandle> handle_of;
  size_t moves = 0;

  EntryHandle Add(size_t bytes, uint32_t id) {
    const EntryHandle h = slabs->Allocate(bytes);
    Stamp(*slabs, h, id);
    id_of[h] = id;
    handle_of[id] = h;
    return h;
  }
  // By id: a handle the test kept may have been moved since.
  void Remove(uint32_t id) {
    const EntryHandle h = handle_of.at(id);
    handle_of.erase(id);
    id_of.erase(h);
    slabs->Free(h);
  }
  size_t Compact() {
    return slabs->Compact([this](EntryHandle from, EntryHandle to) {
      auto it = id_of.find(from);
      ASSERT_NE(it, id_of.end()) << "moved a block the owner does not hold";
      EXPECT_EQ(id_of.count(to), 0u) << "moved onto a live block";
      // Both copies are readable during the callback.
      EXPECT_TRUE(Holds(*slabs, from, it->second));
      EXPECT_TRUE(Holds(*slabs, to, it->second));
      const uint32_t id = it->second;
      id_of.erase(it);
      id_of[to] = id;
      handle_of[id] = to;
      ++moves;
    });
  }
  void ExpectIntact() {
    for (const auto& [h, id] : id_of) EXPECT_TRUE(Holds(*slabs, h, id)) << "block " << id;
  }
};

TEST(EntrySlabsTest, CompactionIsDueOnlyPastAQuarterOfFreeSlots) {
  EntrySlabs slabs;
  Owner owner{&slabs, {}, {}, 0};
  for (uint32_t i = 0; i < 64 * 16; ++i) owner.Add(128, i);
  ASSERT_EQ(slabs.slab_count(), 16u);
  // Every fourth block of each slab: 255 free of 1024 is under a quarter.
  for (uint32_t i = 0; i + 4 < 64 * 16; i += 4) owner.Remove(i);
  EXPECT_FALSE(slabs.compaction_due());
  owner.Remove(64 * 16 - 4);  // 256 of 1024.
  EXPECT_TRUE(slabs.compaction_due());
}

TEST(EntrySlabsTest, CompactionPacksAClassIntoItsFewestSlabsAndKeepsEveryBlock) {
  EntrySlabs slabs;
  Owner owner{&slabs, {}, {}, 0};
  // Two classes; one is thinned out, the other must stay put.
  for (uint32_t i = 0; i < 64 * 20; ++i) owner.Add(128, i);
  for (uint32_t i = 0; i < 100; ++i) owner.Add(40, 100'000 + i);
  const size_t other_slabs = slabs.slab_count() - 20;
  // Half of each slab of the 128-byte class: fragmentation that frees no slab.
  for (uint32_t i = 0; i < 64 * 20; i += 2) owner.Remove(i);
  EXPECT_EQ(slabs.slab_count(), 20 + other_slabs);
  ASSERT_TRUE(slabs.compaction_due());
  while (slabs.compaction_due()) owner.Compact();
  // 640 live blocks fit 10 slabs; the other class was not touched.
  EXPECT_EQ(slabs.slab_count(), 10 + other_slabs);
  EXPECT_LT(slabs.free_slots(), 2u * 64);
  EXPECT_LE(owner.moves, 320u);
  EXPECT_EQ(slabs.moved_blocks(), owner.moves);
  EXPECT_EQ(owner.id_of.size(), 640u + 100);
  owner.ExpectIntact();
  // Allocation after compaction still hands out distinct blocks.
  for (uint32_t i = 0; i < 100; ++i) owner.Add(128, 200'000 + i);
  owner.ExpectIntact();
}

TEST(EntrySlabsTest, CompactionMovesAtMostItsBudgetPerCall) {
  EntrySlabs slabs;
  Owner owner{&slabs, {}, {}, 0};
  for (uint32_t i = 0; i < 64 * 200; ++i) owner.Add(16, i);
  for (uint32_t i = 0; i < 64 * 200; i += 2) owner.Remove(i);
  ASSERT_TRUE(slabs.compaction_due());
  int calls = 0;
  while (slabs.compaction_due()) {
    EXPECT_LE(owner.Compact(), EntrySlabs::kMaxMovesPerCompaction);
    ASSERT_LT(++calls, 100);
  }
  EXPECT_GT(calls, 1) << "3,200 moves need more than one call";
  EXPECT_EQ(slabs.slab_count(), 100u);
  owner.ExpectIntact();
}

// Values that keep changing size: whatever the order of frees, slab memory
// stays within the documented bound once compaction has run.
TEST(EntrySlabsTest, ChangingSizesStrandAtMostAQuarterOfAClass) {
  EntrySlabs slabs;
  Owner owner{&slabs, {}, {}, 0};
  std::vector<uint32_t> live;  // Ids.
  uint32_t next_id = 0;
  uint64_t seed = 12345;
  auto random = [&seed] {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<uint32_t>(seed >> 33);
  };
  for (int i = 0; i < 20'000; ++i) {
    owner.Add(64 + random() % 2 * 64, next_id);
    live.push_back(next_id++);
  }
  for (int step = 0; step < 200'000; ++step) {
    // Replace a random block with one of two neighbouring classes among four,
    // the pair drifting every 50,000 steps: classes fill up and drain.
    const size_t victim = random() % live.size();
    owner.Remove(live[victim]);
    owner.Add(64 + (step / 50'000 + random() % 2) % 4 * 64, next_id);
    live[victim] = next_id++;
    while (slabs.compaction_due()) owner.Compact();
  }
  size_t live_bytes = 0;
  for (const auto& [h, id] : owner.id_of) live_bytes += slabs.BlockBytes(h);
  // Per class: at most 4/3 of its live bytes, or two slabs (16 KiB) more.
  const uint64_t bound = live_bytes * 4 / 3 + 4 * 2 * (8192 + 16) + 64 * 1024;
  EXPECT_LE(slabs.MemoryBytes(), bound) << "live " << live_bytes;
  EXPECT_GT(slabs.moved_blocks(), 0u);
  owner.ExpectIntact();
}

TEST(EntrySlabsTest, ClearFreesEverything) {
  EntrySlabs slabs;
  const uint64_t empty = slabs.MemoryBytes();
  for (int i = 0; i < 1000; ++i) slabs.Allocate(static_cast<size_t>(i) * 3);
  slabs.Clear();
  EXPECT_EQ(slabs.slab_count(), 0u);
  EXPECT_EQ(slabs.MemoryBytes(), empty);
  EXPECT_FALSE(slabs.compaction_due());
  const EntryHandle h = slabs.Allocate(10);
  Stamp(slabs, h, 7);
  EXPECT_TRUE(Holds(slabs, h, 7));
}

}  // namespace
}  // namespace kvstore
