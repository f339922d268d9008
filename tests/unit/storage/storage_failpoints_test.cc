// The storage failpoints (common/storage/storage_failpoints.h) as the fault
// suite uses them in real binaries: an injected log fsync or write error must
// take the same path as a real one, the log's sticky error (wal.h). What a
// failed sync means for acknowledgements is store_test's and wal_test's
// (FailedLogSyncIsNeverAcknowledgedAndIsSticky, FailedWriteOrSyncIsReportedAndSticky,
// with the fake file system); this only checks that the failpoints reach it.
// Only in builds with -DKV_FAULT_CONTROLS=ON; elsewhere the tests skip.
#include "common/storage/storage_failpoints.h"

#include <cerrno>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/storage/log_format.h"
#include "common/storage/wal.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/fake_file_system.h"

#ifdef KV_FAULT_CONTROLS
#include <fiu-control.h>
#include <fiu.h>
#endif

namespace kvstore {
namespace {

using ::kvstore::testing::FakeFileSystem;
using ::testing::HasSubstr;

constexpr char kDir[] = "/db";

std::string Record(uint64_t index) {
  std::string out;
  log::AppendRecord(index, 1, log::RecordType::kOp, absl::StrCat("value-", index), &out);
  return out;
}

class StorageFailpointsTest : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef KV_FAULT_CONTROLS
    GTEST_SKIP() << "failpoints are compiled in only with -DKV_FAULT_CONTROLS=ON";
#else
    ASSERT_EQ(fiu_init(0), 0);
    absl::StatusOr<std::unique_ptr<Wal> > wal =
        Wal::Open(&fs_, kDir, WalOptions(), 0, [](const WalRecord&) { return absl::OkStatus(); });
    ASSERT_TRUE(wal.ok()) << wal.status();
    wal_ = *std::move(wal);
#endif
  }
  void TearDown() override {
#ifdef KV_FAULT_CONTROLS
    for (const char* name : storage_failpoints::kAll) fiu_disable(name);
#endif
  }
  void Enable(const char* name, int failnum) {
#ifdef KV_FAULT_CONTROLS
    ASSERT_EQ(fiu_enable(name, failnum, nullptr, 0), 0);
#endif
  }

  FakeFileSystem fs_;
  std::unique_ptr<Wal> wal_;
};

TEST_F(StorageFailpointsTest, AnInjectedLogFsyncErrorIsStickyAndNothingBecomesDurable) {
  ASSERT_TRUE(wal_->Append(Record(1), 1, 1).ok());
  ASSERT_TRUE(wal_->Sync().ok());
  ASSERT_TRUE(wal_->Append(Record(2), 2, 2).ok());
  Enable(storage_failpoints::kWalFsync, 1);
  const absl::Status failed = wal_->Sync();
  ASSERT_FALSE(failed.ok());
  EXPECT_TRUE(absl::IsInternal(failed)) << failed;
  EXPECT_THAT(std::string(failed.message()), HasSubstr("Input/output error"));
  EXPECT_THAT(std::string(failed.message()), HasSubstr("kvstore/wal/fsync"));
  EXPECT_EQ(wal_->durable_index(), 1u);
  // Switched off again, the log still refuses: never retried, never acknowledged.
#ifdef KV_FAULT_CONTROLS
  fiu_disable(storage_failpoints::kWalFsync);
#endif
  EXPECT_EQ(wal_->Sync(), failed);
  EXPECT_EQ(wal_->Append(Record(3), 3, 3), failed);
  EXPECT_EQ(wal_->durable_index(), 1u);
}

TEST_F(StorageFailpointsTest, AnInjectedEnospcOnALogWriteIsResourceExhaustedAndSticky) {
  ASSERT_TRUE(wal_->Append(Record(1), 1, 1).ok());
  Enable(storage_failpoints::kWalWrite, ENOSPC);
  const absl::Status failed = wal_->Append(Record(2), 2, 2);
  ASSERT_FALSE(failed.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(failed)) << failed;
  EXPECT_THAT(std::string(failed.message()), HasSubstr("No space left on device"));
  EXPECT_EQ(wal_->last_index(), 1u) << "a refused write must not count as appended";
#ifdef KV_FAULT_CONTROLS
  fiu_disable(storage_failpoints::kWalWrite);
#endif
  EXPECT_EQ(wal_->Sync(), failed);
}

}  // namespace
}  // namespace kvstore
