#include "common/replication/snapshot_receiver.h"

#include <xxhash.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace kvstore {

SnapshotReceiver::SnapshotReceiver(FileSystem* fs, std::string path)
    : fs_(fs), path_(std::move(path)) {}

SnapshotReceiver::~SnapshotReceiver() {
  if (file_ == nullptr) return;
  if (absl::Status s = file_->Close(); !s.ok()) {
    LOG(WARNING) << "Closing the partly received snapshot " << path_ << ": " << s;
  }
}

absl::Status SnapshotReceiver::Begin(const v1::SnapshotBegin&) {
  file_.reset();
  bytes_ = 0;
  absl::StatusOr<std::unique_ptr<WritableFile>> file = fs_->CreateFile(path_);
  if (!file.ok()) return file.status();
  file_ = *std::move(file);
  return absl::OkStatus();
}

absl::Status SnapshotReceiver::Chunk(const v1::SnapshotChunk& chunk) {
  if (file_ == nullptr || chunk.offset() != bytes_ ||
      XXH3_64bits(chunk.data().data(), chunk.data().size()) != chunk.checksum()) {
    return absl::DataLossError(absl::StrCat("snapshot chunk at offset ", chunk.offset(),
                                            " is out of order or fails its checksum"));
  }
  if (absl::Status s = file_->Append(chunk.data()); !s.ok()) return s;
  bytes_ += chunk.data().size();
  return absl::OkStatus();
}

absl::Status SnapshotReceiver::End() {
  if (file_ == nullptr) return absl::InvalidArgumentError("snapshot end without a snapshot");
  absl::Status s = file_->Sync();
  if (absl::Status closed = file_->Close(); s.ok()) s = closed;
  file_.reset();
  return s;
}

}  // namespace kvstore
