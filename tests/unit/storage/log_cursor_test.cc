// LogCursor over real files: a cursor that reached the end of a segment which
// is then removed (a snapshot install reset the log, e.g. a restore on a
// leader) must say NotFound, so its follower gets a snapshot, instead of
// waiting for records that will never be appended there.
#include "common/storage/log_cursor.h"

#include <stdlib.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "common/storage/file_system.h"
#include "common/storage/log_format.h"
#include "gtest/gtest.h"

namespace kvstore {
namespace {

class LogCursorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = JoinPath(::testing::TempDir(), "log_cursor_test.XXXXXX");
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
  }
  void TearDown() override {
    for (const std::string& name : fs_->ListDir(dir_).value_or(std::vector<std::string>{})) {
      EXPECT_TRUE(fs_->Remove(JoinPath(dir_, name)).ok());
    }
    ::rmdir(dir_.c_str());
  }

  // A segment starting at `first` holding records first..last.
  void WriteSegment(uint64_t first, uint64_t last) {
    std::string bytes;
    log::AppendSegmentHeader(first, &bytes);
    for (uint64_t i = first; i <= last; ++i) {
      log::AppendRecord(i, 1, log::RecordType::kEpoch, "leader", &bytes);
    }
    auto file = fs_->CreateFile(JoinPath(dir_, log::SegmentFileName(first)));
    ASSERT_TRUE(file.ok());
    ASSERT_TRUE((*file)->Append(bytes).ok());
    ASSERT_TRUE((*file)->Close().ok());
  }

  FileSystem* fs_ = PosixFileSystem();
  std::string dir_;
};

TEST_F(LogCursorTest, ASegmentRemovedUnderTheCursorIsNotFoundOnceTheLogMovedOn) {
  WriteSegment(1, 2);
  LogCursor cursor(fs_, dir_);
  cursor.Seek(1);
  std::string records;
  uint64_t first = 0;
  uint64_t last = 0;
  ASSERT_TRUE(cursor.Read(2, 1 << 20, &records, &first, &last).ok());
  EXPECT_EQ(first, 1u);
  EXPECT_EQ(last, 2u);

  // The log is reset to continue at 10: index 3 never comes.
  ASSERT_TRUE(fs_->Remove(JoinPath(dir_, log::SegmentFileName(1))).ok());
  WriteSegment(10, 10);
  records.clear();
  const absl::Status s = cursor.Read(10, 1 << 20, &records, &first, &last);
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
}

TEST_F(LogCursorTest, ASegmentRemovedUnderTheCursorGoesOnInTheSegmentHoldingItsNextIndex) {
  WriteSegment(1, 2);
  LogCursor cursor(fs_, dir_);
  cursor.Seek(1);
  std::string records;
  uint64_t first = 0;
  uint64_t last = 0;
  ASSERT_TRUE(cursor.Read(2, 1 << 20, &records, &first, &last).ok());
  ASSERT_TRUE(fs_->Remove(JoinPath(dir_, log::SegmentFileName(1))).ok());
  WriteSegment(3, 4);
  records.clear();
  ASSERT_TRUE(cursor.Read(4, 1 << 20, &records, &first, &last).ok());
  EXPECT_EQ(first, 3u);
  EXPECT_EQ(last, 4u);
}

}  // namespace
}  // namespace kvstore
