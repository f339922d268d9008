#include "common/backup/backup_image.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/storage/log_format.h"
#include "common/storage/log_reader.h"
#include "common/storage/op.h"
#include "common/storage/snapshot.h"

namespace kvstore {

uint32_t BackupChunkChecksum(absl::string_view data) { return log::Checksum(data); }

absl::StatusOr<Image> ReadImage(FileSystem* fs, const std::string& snapshot_path,
                                const std::string& log_path) {
  Image image;
  absl::StatusOr<SnapshotMeta> meta = LoadSnapshot(
      fs, snapshot_path,
      [&](absl::string_view key, absl::string_view value, uint64_t version, int64_t expire) {
        image.keys[key] = ImageEntry{std::string(value), version, expire};
        return absl::OkStatus();
      });
  if (!meta.ok()) return meta.status();
  image.snapshot_start_index = meta->start_index;
  image.last_index = meta->start_index;
  image.last_epoch = meta->epoch;
  if (!log_path.empty()) {
    absl::StatusOr<std::string> data = fs->ReadFile(log_path);
    if (!data.ok()) return data.status();
    uint64_t first_index = 0;
    if (!log::ParseSegmentHeader(*data, &first_index)) {
      return absl::DataLossError(
          absl::StrCat("log ", log_path, " is damaged at offset 0: not a log segment header"));
    }
    if (first_index != meta->start_index + 1) {
      return absl::DataLossError(absl::StrCat("log ", log_path, " starts at index ", first_index,
                                              ", but the snapshot ", snapshot_path,
                                              " needs it to start at ", meta->start_index + 1));
    }
    log::LogReader reader(*data, log::kSegmentHeaderSize);
    log::LogRecord record;
    log::ReadStatus rs;
    uint64_t expected = first_index;
    while ((rs = reader.Next(&record)) == log::ReadStatus::kRecord) {
      if (record.header.index != expected) {
        return absl::DataLossError(absl::StrCat("log ", log_path, " is damaged at offset ",
                                                record.offset, ": index ", record.header.index,
                                                " where ", expected, " was due"));
      }
      ++expected;
      image.last_index = record.header.index;
      image.last_epoch = record.header.epoch;
      if (record.header.type != log::RecordType::kOp) continue;
      OpView op;
      if (!DecodeOp(record.payload, &op)) {
        return absl::DataLossError(absl::StrCat("log ", log_path, " is damaged at offset ",
                                                record.offset, ": record ", record.header.index,
                                                " does not hold a valid operation"));
      }
      if (op.type == OpType::kPut) {
        image.keys[op.key] = ImageEntry{std::string(op.value), op.version, op.expire_unix_ms};
      } else {
        image.keys.erase(op.key);
      }
    }
    if (rs != log::ReadStatus::kEndOfInput) {
      return absl::DataLossError(absl::StrCat("log ", log_path, " is damaged at offset ",
                                              reader.offset(), ": ", log::ReadStatusName(rs)));
    }
  }
  if (image.last_index < meta->end_index) {
    return absl::FailedPreconditionError(
        absl::StrCat("the image ends at index ", image.last_index, " but its snapshot ",
                     snapshot_path, " is whole only from index ", meta->end_index));
  }
  return image;
}

uint64_t LiveKeys(const Image& image, int64_t now_unix_ms) {
  return static_cast<uint64_t>(
      std::count_if(image.keys.begin(), image.keys.end(), [now_unix_ms](const auto& kv) {
        return kv.second.expire_unix_ms == 0 || kv.second.expire_unix_ms > now_unix_ms;
      }));
}

absl::Status VerifyFileChunks(FileSystem* fs, const std::string& path, uint64_t bytes,
                              uint32_t chunk_bytes, const std::vector<uint32_t>& checksums) {
  if (chunk_bytes == 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": chunk size 0 in the manifest"));
  }
  absl::StatusOr<std::unique_ptr<SequentialFile>> file = fs->OpenSequential(path);
  if (!file.ok()) return file.status();
  uint64_t offset = 0;
  size_t chunk = 0;
  std::string data;
  for (;;) {
    if (absl::Status s = (*file)->Read(chunk_bytes, &data); !s.ok()) return s;
    if (data.empty()) break;
    // A short read mid-file: read on until the chunk is whole or the file ends.
    while (data.size() < chunk_bytes) {
      std::string more;
      if (absl::Status s = (*file)->Read(chunk_bytes - data.size(), &more); !s.ok()) return s;
      if (more.empty()) break;
      data += more;
    }
    if (chunk >= checksums.size()) {
      return absl::DataLossError(absl::StrCat("backup file ", path, " is damaged: it is longer (",
                                              offset + data.size(), "+ bytes) than the ", bytes,
                                              " bytes the manifest lists"));
    }
    if (BackupChunkChecksum(data) != checksums[chunk]) {
      return absl::DataLossError(absl::StrCat("backup file ", path,
                                              " is damaged: checksum mismatch in the chunk at "
                                              "offset ",
                                              offset, " (", data.size(), " bytes)"));
    }
    offset += data.size();
    ++chunk;
  }
  if (offset != bytes || chunk != checksums.size()) {
    return absl::DataLossError(absl::StrCat("backup file ", path, " is damaged: it has ", offset,
                                            " bytes, the manifest lists ", bytes));
  }
  return absl::OkStatus();
}

}  // namespace kvstore
