// When the nemesis may claim that a power cut drops an acknowledged write
// (tools/kvfault/acked_cut.h): only when no node has made durable any byte
// appended after the last sample taken before the write was invoked.
#include "tools/kvfault/acked_cut.h"

#include <map>
#include <vector>

#include "gtest/gtest.h"

namespace kvstore::fault {
namespace {

using Lengths = std::map<uint64_t, int64_t>;

FilesState Files(Lengths size, Lengths durable) { return FilesState{size, durable}; }

TEST(AckedCutWatchTest, NothingToProveBeforeTheFirstSample) {
  AckedCutWatch watch;
  EXPECT_FALSE(watch.DurableNowhere(100, {{{1, 0}}}));
}

TEST(AckedCutWatchTest, AWriteInvokedAfterTheSampleIsDurableNowhereWhileNoFsyncPassedTheSizes) {
  AckedCutWatch watch;
  // Two nodes, one log each (inodes 1 and 2), each with 20 bytes pending.
  watch.AddSample(10, {Files({{1, 100}}, {{1, 80}}), Files({{2, 100}}, {{2, 80}})});
  EXPECT_TRUE(watch.DurableNowhere(20, {{{1, 80}}, {{2, 80}}}));
  // An fsync that began before the write covers at most the sampled size.
  EXPECT_TRUE(watch.DurableNowhere(20, {{{1, 100}}, {{2, 100}}}));
}

TEST(AckedCutWatchTest, AnyNodeWithBytesPastTheSampleDurableMayHoldTheWrite) {
  AckedCutWatch watch;
  watch.AddSample(10, {Files({{1, 100}}, {{1, 80}}), Files({{2, 100}}, {{2, 80}})});
  EXPECT_FALSE(watch.DurableNowhere(20, {{{1, 80}}, {{2, 101}}}));
  EXPECT_FALSE(watch.DurableNowhere(20, {{{1, 140}}, {{2, 80}}}));
}

TEST(AckedCutWatchTest, AWriteInvokedBeforeEverySampleCannotBePlaced) {
  AckedCutWatch watch;
  watch.AddSample(10, {Files({{1, 100}}, {{1, 80}})});
  EXPECT_FALSE(watch.DurableNowhere(10, {{{1, 80}}}));  // Not strictly after.
  EXPECT_FALSE(watch.DurableNowhere(5, {{{1, 80}}}));
}

TEST(AckedCutWatchTest, UsesTheNewestSampleBeforeTheInvoke) {
  AckedCutWatch watch;
  watch.AddSample(10, {Files({{1, 100}}, {{1, 80}})});
  watch.AddSample(30, {Files({{1, 200}}, {{1, 80}})});
  watch.AddSample(50, {Files({{1, 300}}, {{1, 80}})});
  // Invoked at 20: only the first sample bounds where its bytes are.
  EXPECT_FALSE(watch.DurableNowhere(20, {{{1, 150}}}));
  // Invoked at 40: its bytes lie past 200.
  EXPECT_TRUE(watch.DurableNowhere(40, {{{1, 150}}}));
  EXPECT_EQ(watch.samples(), 2u);  // The first is of no more use.
}

TEST(AckedCutWatchTest, AFileCreatedAfterTheSampleCountsFromZero) {
  AckedCutWatch watch;
  watch.AddSample(10, {Files({{1, 100}}, {{1, 100}})});
  // A new segment (inode 2) made durable: the write may be in it.
  EXPECT_FALSE(watch.DurableNowhere(20, {{{1, 100}, {2, 40}}}));
  // Created, never synced (the journal says 0 bytes durable).
  EXPECT_TRUE(watch.DurableNowhere(20, {{{1, 100}, {2, 0}}}));
}

TEST(AckedCutWatchTest, ADurableLengthUnchangedSinceTheSampleDoesNotCount) {
  AckedCutWatch watch;
  // The journal, read after the sizes, already had an fsync of bytes written
  // in between: it finished before the sample's time, so before the invoke.
  watch.AddSample(10, {Files({{1, 100}}, {{1, 120}})});
  EXPECT_TRUE(watch.DurableNowhere(20, {{{1, 120}}}));
  EXPECT_FALSE(watch.DurableNowhere(20, {{{1, 130}}}));
}

TEST(AckedCutWatchTest, KeepsABoundedNumberOfSamples) {
  AckedCutWatch watch;
  for (int64_t t = 1; t <= static_cast<int64_t>(AckedCutWatch::kMaxSamples) + 10; ++t) {
    watch.AddSample(t, {Files({{1, 100}}, {{1, 100}})});
  }
  EXPECT_EQ(watch.samples(), AckedCutWatch::kMaxSamples);
  EXPECT_FALSE(watch.DurableNowhere(5, {{{1, 100}}}));  // Older than every sample kept.
}

}  // namespace
}  // namespace kvstore::fault
