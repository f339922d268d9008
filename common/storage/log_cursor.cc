#include "common/storage/log_cursor.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/storage/log_format.h"
#include "common/storage/log_reader.h"

namespace kvstore {
namespace {

constexpr size_t kReadChunk = 1 << 20;

// First index of the segment that would hold `index`: the largest segment
// first index <= index. NotFound when there is none.
absl::StatusOr<uint64_t> SegmentHolding(FileSystem* fs, const std::string& dir, uint64_t index) {
  absl::StatusOr<std::vector<std::string>> names = fs->ListDir(dir);
  if (!names.ok()) return names.status();
  uint64_t best = 0;
  bool found = false;
  for (const std::string& name : *names) {
    uint64_t first = 0;
    if (!log::ParseSegmentFileName(name, &first) || first > index) continue;
    if (!found || first > best) best = first;
    found = true;
  }
  if (!found) {
    return absl::NotFoundError(
        absl::StrCat("log index ", index, " is no longer in the log in ", dir));
  }
  return best;
}

}  // namespace

void LogCursor::Seek(uint64_t index) {
  next_ = index;
  file_.reset();
  buffer_.clear();
  buffer_pos_ = 0;
}

absl::Status LogCursor::OpenSegmentFor(uint64_t index) {
  absl::StatusOr<uint64_t> first = SegmentHolding(fs_, dir_, index);
  if (!first.ok()) return first.status();
  absl::StatusOr<std::unique_ptr<SequentialFile>> file =
      fs_->OpenSequential(JoinPath(dir_, log::SegmentFileName(*first)));
  if (!file.ok()) {
    // Removed between the listing and the open.
    if (absl::IsNotFound(file.status())) {
      return absl::NotFoundError(
          absl::StrCat("log index ", index, " is no longer in the log in ", dir_));
    }
    return file.status();
  }
  file_ = *std::move(file);
  segment_first_ = *first;
  header_read_ = false;
  buffer_.clear();
  buffer_pos_ = 0;
  return absl::OkStatus();
}

absl::StatusOr<size_t> LogCursor::Fill(size_t n) {
  if (buffer_pos_ > 0 && buffer_pos_ >= buffer_.size() / 2) {
    buffer_.erase(0, buffer_pos_);
    buffer_pos_ = 0;
  }
  std::string chunk;
  if (absl::Status s = file_->Read(n, &chunk); !s.ok()) return s;
  buffer_.append(chunk);
  return chunk.size();
}

absl::Status LogCursor::Read(uint64_t written, size_t max_bytes, std::string* records,
                             uint64_t* first, uint64_t* last) {
  *first = 0;
  *last = 0;
  const size_t start_size = records->size();
  if (next_ > written) return absl::OkStatus();
  if (file_ == nullptr) {
    if (absl::Status s = OpenSegmentFor(next_); !s.ok()) return s;
  }
  while (next_ <= written && (*first == 0 || records->size() - start_size < max_bytes)) {
    size_t avail = buffer_.size() - buffer_pos_;
    const size_t want = header_read_ ? log::kRecordHeaderSize : log::kSegmentHeaderSize;
    if (avail < want) {
      absl::StatusOr<size_t> got = Fill(kReadChunk);
      if (!got.ok()) return got.status();
      if (*got > 0) continue;
      // The end of what this segment holds so far. It is complete once the log
      // has moved on to a segment starting at next_.
      if (avail == 0 && fs_->Exists(JoinPath(dir_, log::SegmentFileName(next_))) &&
          segment_first_ != next_) {
        if (absl::Status s = OpenSegmentFor(next_); !s.ok()) return s;
        continue;
      }
      // The segment was removed under the cursor (a snapshot install reset
      // the log): nothing more will be written to it, so look for next_
      // afresh, which says NotFound when the log no longer holds it.
      if (avail == 0 && !fs_->Exists(JoinPath(dir_, log::SegmentFileName(segment_first_)))) {
        if (absl::Status s = OpenSegmentFor(next_); !s.ok()) return s;
        continue;
      }
      break;  // More is being written; the caller comes back.
    }
    const absl::string_view data = absl::string_view(buffer_).substr(buffer_pos_);
    if (!header_read_) {
      uint64_t header_first = 0;
      if (!log::ParseSegmentHeader(data, &header_first) || header_first != segment_first_) {
        return absl::DataLossError(
            absl::StrCat("log segment ", JoinPath(dir_, log::SegmentFileName(segment_first_)),
                         " has a bad header"));
      }
      buffer_pos_ += log::kSegmentHeaderSize;
      header_read_ = true;
      continue;
    }
    log::RecordHeader header;
    if (log::DecodeRecordHeader(data, &header) != log::HeaderResult::kOk) {
      return absl::DataLossError(
          absl::StrCat("log record after index ", next_ - 1, " in ", dir_, " has a bad header"));
    }
    const size_t need = log::kRecordHeaderSize + header.payload_len;
    if (avail < need) {
      absl::StatusOr<size_t> got = Fill(std::max(kReadChunk, need - avail));
      if (!got.ok()) return got.status();
      if (*got > 0) continue;
      break;  // The rest of the record is still being written.
    }
    if (header.index > written) break;
    const absl::string_view payload = data.substr(log::kRecordHeaderSize, header.payload_len);
    if (log::Checksum(payload) != header.payload_check) {
      return absl::DataLossError(
          absl::StrCat("log record ", header.index, " in ", dir_, " fails its payload check"));
    }
    if (header.index < next_) {  // Before the starting point: skip.
      buffer_pos_ += need;
      continue;
    }
    if (header.index != next_) {
      return absl::DataLossError(
          absl::StrCat("log in ", dir_, " jumps from index ", next_ - 1, " to ", header.index));
    }
    records->append(data.data(), need);
    if (*first == 0) *first = header.index;
    *last = header.index;
    ++next_;
    buffer_pos_ += need;
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> LogCursor::EpochAt(FileSystem* fs, const std::string& dir,
                                            uint64_t index) {
  absl::StatusOr<uint64_t> first = SegmentHolding(fs, dir, index);
  if (!first.ok()) return first.status();
  absl::StatusOr<std::string> contents = fs->ReadFile(JoinPath(dir, log::SegmentFileName(*first)));
  if (!contents.ok()) return contents.status();
  log::LogReader reader(*contents, log::kSegmentHeaderSize);
  log::LogRecord record;
  while (reader.Next(&record) == log::ReadStatus::kRecord) {
    if (record.header.index == index) return record.header.epoch;
    if (record.header.index > index) break;
  }
  return absl::NotFoundError(absl::StrCat("log index ", index, " is not in the log in ", dir));
}

}  // namespace kvstore
