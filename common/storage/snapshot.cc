#include "common/storage/snapshot.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/storage/coding.h"
#include "common/storage/log_format.h"
#include "common/storage/storage_failpoints.h"
#include "glog/logging.h"

namespace kvstore {
namespace {

constexpr char kMagic[8] = {'K', 'V', 'S', 'N', 'A', 'P', 0, 0};
constexpr uint32_t kVersion = 1;

// header: magic 8 | version u32 | header_check u32 | start u64 | epoch u64 | created i64
constexpr size_t kHeaderBytes = 40;
constexpr size_t kVersionOffset = 8;
constexpr size_t kHeaderCheckOffset = 12;
constexpr size_t kHeaderCheckedFrom = 16;
constexpr size_t kStartIndexOffset = 16;
constexpr size_t kEpochOffset = 24;
constexpr size_t kCreatedOffset = 32;

// block: block_len u32 | block_check u32 | entries
constexpr size_t kBlockHeaderBytes = 8;
// trailer: 0 u32 | entry_count u64 | end_index u64 | trailer_check u32
constexpr size_t kTrailerBytes = 24;
constexpr size_t kTrailerCheckedBytes = 16;

// entry: key_len varint32 | value_len varint32 | version u64 | expire i64 | key | value
constexpr size_t kEntryFixedBytes = 16;
constexpr size_t kMaxEntryHeaderBytes = 2 * kMaxVarint32Bytes + kEntryFixedBytes;

// A block is written once it holds this much: big enough that the per-block
// framing, checksum call and read are noise, small enough to keep the reader's
// memory flat.
constexpr size_t kTargetBlockBytes = 64 << 10;
// The reader refuses longer blocks before allocating. It must exceed any entry
// the log can carry, or a large value that was accepted could never be
// snapshotted; the file size bounds a damaged length far more tightly anyway.
constexpr uint32_t kMaxBlockBytes = log::kMaxPayloadSize + (1u << 20);
static_assert(kMaxBlockBytes > log::kMaxPayloadSize + kMaxEntryHeaderBytes + kTargetBlockBytes);

constexpr absl::string_view kFilePrefix = "snap-";
constexpr absl::string_view kFileSuffix = ".snap";
constexpr absl::string_view kTmpSuffix = ".tmp";
constexpr size_t kFileDigits = 20;

uint32_t Checksum(const char* data, size_t n) {
  return static_cast<uint32_t>(XXH3_64bits(data, n));
}

// Same code, with the operation and the file in front of the message.
absl::Status Annotate(const absl::Status& s, absl::string_view what, const std::string& path) {
  return absl::Status(s.code(), absl::StrCat(what, " ", path, ": ", s.message()));
}

bool ParseTmpFileName(absl::string_view name, uint64_t* start_index) {
  return absl::ConsumeSuffix(&name, kTmpSuffix) && ParseSnapshotFileName(name, start_index);
}

// Streams one snapshot file: the header, then one block at a time into a
// buffer that is reused, so memory stays at the largest block whatever the
// file size. Every failure of a check names the file and the offset where the
// damaged part starts.
class SnapshotLoader {
 public:
  using EntryFn =
      std::function<absl::Status(absl::string_view, absl::string_view, uint64_t, int64_t)>;

  SnapshotLoader(std::string path, std::unique_ptr<SequentialFile> file, uint64_t file_size)
      : path_(std::move(path)), file_(std::move(file)), file_size_(file_size) {}

  absl::StatusOr<SnapshotMeta> Load(const EntryFn& fn) {
    SnapshotMeta meta;
    meta.path = path_;
    if (absl::Status s = ReadHeader(&meta); !s.ok()) return s;
    uint64_t entries = 0;
    for (;;) {
      const uint64_t at = offset_;
      if (absl::Status s = Read(4, &small_); !s.ok()) return s;
      if (small_.size() < 4) {
        return Damaged(at, small_.empty() ? "the file ends where a block or the trailer belongs"
                                          : "the file ends inside a block header");
      }
      const uint32_t block_len = DecodeFixed32(small_.data());
      if (block_len == 0) break;  // The trailer's marker.
      if (absl::Status s = ReadBlock(at, block_len); !s.ok()) return s;
      if (absl::Status s = DecodeEntries(at + kBlockHeaderBytes, fn, &entries); !s.ok()) return s;
    }
    const uint64_t trailer_at = offset_ - 4;
    if (absl::Status s = Read(kTrailerBytes - 4, &small_); !s.ok()) return s;
    if (small_.size() < kTrailerBytes - 4) {
      return Damaged(trailer_at, absl::StrCat("the file ends ", small_.size() + 4,
                                              " bytes into the ", kTrailerBytes, "-byte trailer"));
    }
    const char* t = small_.data();
    if (DecodeFixed32(t + kTrailerCheckedBytes) != Checksum(t, kTrailerCheckedBytes)) {
      return Damaged(trailer_at, "the trailer fails its checksum");
    }
    const uint64_t entry_count = DecodeFixed64(t);
    if (entry_count != entries) {
      return Damaged(trailer_at, absl::StrCat("the trailer counts ", entry_count,
                                              " entries but the blocks hold ", entries));
    }
    meta.entries = entries;
    meta.end_index = DecodeFixed64(t + 8);
    const uint64_t end = offset_;
    if (absl::Status s = Read(1, &small_); !s.ok()) return s;
    if (!small_.empty() || end != file_size_) {
      return Damaged(end, absl::StrCat("unexpected bytes after the trailer (the file has ",
                                       std::max(file_size_, end + small_.size()), " bytes)"));
    }
    meta.bytes = end;
    return meta;
  }

 private:
  absl::Status Damaged(uint64_t offset, absl::string_view what) const {
    return absl::DataLossError(
        absl::StrCat("snapshot ", path_, " is damaged at offset ", offset, ": ", what));
  }

  // Reads up to n bytes into *out; fewer only at the end of the file.
  absl::Status Read(size_t n, std::string* out) {
    if (absl::Status s = file_->Read(n, out); !s.ok()) return Annotate(s, "reading", path_);
    while (out->size() < n) {
      if (absl::Status s = file_->Read(n - out->size(), &chunk_); !s.ok()) {
        return Annotate(s, "reading", path_);
      }
      if (chunk_.empty()) break;
      out->append(chunk_);
    }
    offset_ += out->size();
    return absl::OkStatus();
  }

  absl::Status ReadHeader(SnapshotMeta* meta) {
    if (absl::Status s = Read(kHeaderBytes, &small_); !s.ok()) return s;
    if (small_.size() < kHeaderBytes) {
      return Damaged(0, absl::StrCat("the file ends after ", small_.size(), " bytes, inside the ",
                                     kHeaderBytes, "-byte header"));
    }
    const char* h = small_.data();
    if (std::memcmp(h, kMagic, sizeof(kMagic)) != 0) {
      return Damaged(0, "the magic is not \"KVSNAP\\0\\0\"");
    }
    if (const uint32_t version = DecodeFixed32(h + kVersionOffset); version != kVersion) {
      return Damaged(
          0, absl::StrCat("unsupported version ", version, " (this build reads ", kVersion, ")"));
    }
    if (DecodeFixed32(h + kHeaderCheckOffset) !=
        Checksum(h + kHeaderCheckedFrom, kHeaderBytes - kHeaderCheckedFrom)) {
      return Damaged(0, "the header fails its checksum");
    }
    meta->start_index = DecodeFixed64(h + kStartIndexOffset);
    meta->epoch = DecodeFixed64(h + kEpochOffset);
    meta->created_unix_ms = static_cast<int64_t>(DecodeFixed64(h + kCreatedOffset));
    return absl::OkStatus();
  }

  // Reads the rest of the block starting at `at` (its length already read) into block_.
  absl::Status ReadBlock(uint64_t at, uint32_t block_len) {
    if (absl::Status s = Read(4, &small_); !s.ok()) return s;
    if (small_.size() < 4) return Damaged(at, "the file ends inside a block header");
    const uint32_t block_check = DecodeFixed32(small_.data());
    // Bound the length before anything is allocated: one flipped bit must not
    // ask for gigabytes.
    if (block_len > kMaxBlockBytes) {
      return Damaged(
          at, absl::StrCat("block length ", block_len, " exceeds the maximum ", kMaxBlockBytes));
    }
    const uint64_t left = file_size_ > offset_ ? file_size_ - offset_ : 0;
    if (block_len > left) {
      return Damaged(at, absl::StrCat("block length ", block_len,
                                      " runs past the end of the file (", left, " bytes left)"));
    }
    if (absl::Status s = Read(block_len, &block_); !s.ok()) return s;
    if (block_.size() < block_len) {
      return Damaged(
          at, absl::StrCat("the file ends ", block_.size(), " bytes into a block of ", block_len));
    }
    if (Checksum(block_.data(), block_.size()) != block_check) {
      return Damaged(at, "the block fails its checksum");
    }
    return absl::OkStatus();
  }

  // Calls fn for each entry of block_, whose first byte is at file offset `base`.
  // The views point into block_: no copy, no allocation per entry.
  absl::Status DecodeEntries(uint64_t base, const EntryFn& fn, uint64_t* entries) {
    absl::string_view rest = block_;
    while (!rest.empty()) {
      const uint64_t entry_at = base + (block_.size() - rest.size());
      uint32_t key_len = 0;
      uint32_t value_len = 0;
      if (!GetVarint32(&rest, &key_len) || !GetVarint32(&rest, &value_len)) {
        return Damaged(entry_at, "an entry's length fields are malformed or cut by the block end");
      }
      const uint64_t left = rest.size();
      if (left < kEntryFixedBytes || left - kEntryFixedBytes < uint64_t{key_len} + value_len) {
        return Damaged(entry_at, absl::StrCat("an entry of key ", key_len, " and value ", value_len,
                                              " bytes runs past the end of its block"));
      }
      const uint64_t version = DecodeFixed64(rest.data());
      const int64_t expire_unix_ms = static_cast<int64_t>(DecodeFixed64(rest.data() + 8));
      rest.remove_prefix(kEntryFixedBytes);
      const absl::string_view key = rest.substr(0, key_len);
      rest.remove_prefix(key_len);
      const absl::string_view value = rest.substr(0, value_len);
      rest.remove_prefix(value_len);
      if (absl::Status s = fn(key, value, version, expire_unix_ms); !s.ok()) return s;
      ++*entries;
    }
    return absl::OkStatus();
  }

  const std::string path_;
  const std::unique_ptr<SequentialFile> file_;
  const uint64_t file_size_;
  uint64_t offset_ = 0;  // Bytes consumed so far.
  std::string small_;    // Header, block header or trailer.
  std::string block_;    // One block's entries, reused.
  std::string chunk_;    // The rest of a short read.
};

}  // namespace

std::string SnapshotFileName(uint64_t start_index) {
  return absl::StrFormat("%s%020u%s", kFilePrefix, start_index, kFileSuffix);
}

bool ParseSnapshotFileName(absl::string_view name, uint64_t* start_index) {
  if (name.size() != kFilePrefix.size() + kFileDigits + kFileSuffix.size()) return false;
  if (!absl::ConsumePrefix(&name, kFilePrefix) || !absl::ConsumeSuffix(&name, kFileSuffix)) {
    return false;
  }
  for (char c : name) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  // SimpleAtoi refuses values past 2^64-1, which 20 digits can spell.
  return absl::SimpleAtoi(name, start_index);
}

SnapshotWriter::SnapshotWriter(FileSystem* fs, std::string dir, std::string tmp_path,
                               std::string final_path, std::unique_ptr<WritableFile> file,
                               SnapshotMeta meta)
    : fs_(fs),
      dir_(std::move(dir)),
      tmp_path_(std::move(tmp_path)),
      final_path_(std::move(final_path)),
      file_(std::move(file)),
      meta_(std::move(meta)) {
  // The block header's place is kept at the front so a block goes out in one Append.
  block_.reserve(kBlockHeaderBytes + kTargetBlockBytes + kMaxEntryHeaderBytes + 4096);
  block_.assign(kBlockHeaderBytes, '\0');
}

absl::StatusOr<std::unique_ptr<SnapshotWriter>> SnapshotWriter::Create(FileSystem* fs,
                                                                       const std::string& dir,
                                                                       uint64_t start_index,
                                                                       uint64_t epoch,
                                                                       int64_t created_unix_ms) {
  const std::string final_path = JoinPath(dir, SnapshotFileName(start_index));
  std::string tmp_path = absl::StrCat(final_path, kTmpSuffix);
  absl::StatusOr<std::unique_ptr<WritableFile>> file = fs->CreateFile(tmp_path);
  if (!file.ok()) return Annotate(file.status(), "creating", tmp_path);

  SnapshotMeta meta;
  meta.path = final_path;
  meta.start_index = start_index;
  meta.epoch = epoch;
  meta.created_unix_ms = created_unix_ms;
  // From here on the writer owns the file: returning early removes it.
  std::unique_ptr<SnapshotWriter> writer(new SnapshotWriter(
      fs, dir, std::move(tmp_path), final_path, *std::move(file), std::move(meta)));

  char header[kHeaderBytes] = {};
  std::memcpy(header, kMagic, sizeof(kMagic));
  EncodeFixed32(kVersion, header + kVersionOffset);
  EncodeFixed64(start_index, header + kStartIndexOffset);
  EncodeFixed64(epoch, header + kEpochOffset);
  EncodeFixed64(static_cast<uint64_t>(created_unix_ms), header + kCreatedOffset);
  EncodeFixed32(Checksum(header + kHeaderCheckedFrom, kHeaderBytes - kHeaderCheckedFrom),
                header + kHeaderCheckOffset);
  if (absl::Status s = writer->file_->Append(absl::string_view(header, kHeaderBytes)); !s.ok()) {
    return Annotate(s, "writing", writer->tmp_path_);
  }
  return writer;
}

SnapshotWriter::~SnapshotWriter() {
  if (committed_ || renamed_) return;
  file_.reset();  // Drops anything still buffered; the file is going away.
  if (absl::Status s = fs_->Remove(tmp_path_); !s.ok()) {
    LOG(WARNING) << "Removing unfinished snapshot " << tmp_path_ << ": " << s
                 << " (the next PruneSnapshots removes it)";
  }
}

absl::Status SnapshotWriter::Add(absl::string_view key, absl::string_view value, uint64_t version,
                                 int64_t expire_unix_ms) {
  if (committed_) return absl::FailedPreconditionError(absl::StrCat(final_path_, " is committed"));
  if (!failed_.ok()) return failed_;
  const uint64_t entry_bytes = kMaxEntryHeaderBytes + uint64_t{key.size()} + value.size();
  if (key.size() > std::numeric_limits<uint32_t>::max() ||
      value.size() > std::numeric_limits<uint32_t>::max() || entry_bytes > kMaxBlockBytes) {
    // Refused without breaking the writer: nothing was written.
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot entry of key ", key.size(), " and value ", value.size(),
                     " bytes exceeds the block limit of ", kMaxBlockBytes, " bytes"));
  }
  if (block_.size() - kBlockHeaderBytes + entry_bytes > kMaxBlockBytes) {
    if (absl::Status s = FlushBlock(); !s.ok()) return s;
  }
  char head[kMaxEntryHeaderBytes];
  char* p = EncodeVarint32(static_cast<uint32_t>(key.size()), head);
  p = EncodeVarint32(static_cast<uint32_t>(value.size()), p);
  EncodeFixed64(version, p);
  EncodeFixed64(static_cast<uint64_t>(expire_unix_ms), p + 8);
  p += kEntryFixedBytes;
  block_.append(head, static_cast<size_t>(p - head));
  block_.append(key.data(), key.size());
  block_.append(value.data(), value.size());
  ++meta_.entries;
  if (block_.size() - kBlockHeaderBytes >= kTargetBlockBytes) return FlushBlock();
  return absl::OkStatus();
}

absl::Status SnapshotWriter::FlushBlock() {
  const size_t len = block_.size() - kBlockHeaderBytes;
  if (len == 0) return absl::OkStatus();  // A zero length would read as the trailer.
  EncodeFixed32(static_cast<uint32_t>(len), block_.data());
  EncodeFixed32(Checksum(block_.data() + kBlockHeaderBytes, len), block_.data() + 4);
  absl::Status s =
      storage_failpoints::InjectedIoError(storage_failpoints::kSnapshotWrite, "write", tmp_path_);
  if (s.ok()) s = file_->Append(block_);
  block_.resize(kBlockHeaderBytes);
  if (!s.ok()) failed_ = Annotate(s, "writing", tmp_path_);
  return failed_;
}

absl::StatusOr<SnapshotMeta> SnapshotWriter::Commit(uint64_t end_index) {
  if (committed_) return absl::FailedPreconditionError(absl::StrCat(final_path_, " is committed"));
  if (!failed_.ok()) return failed_;
  if (absl::Status s = Install(end_index); !s.ok()) {
    failed_ = s;
    return s;
  }
  committed_ = true;
  return meta_;
}

absl::Status SnapshotWriter::Install(uint64_t end_index) {
  namespace fp = storage_failpoints;
  if (absl::Status s = FlushBlock(); !s.ok()) return s;
  char trailer[kTrailerBytes] = {};
  EncodeFixed64(meta_.entries, trailer + 4);
  EncodeFixed64(end_index, trailer + 12);
  EncodeFixed32(Checksum(trailer + 4, kTrailerCheckedBytes), trailer + 4 + kTrailerCheckedBytes);
  if (absl::Status s = fp::InjectedIoError(fp::kSnapshotWrite, "write", tmp_path_); !s.ok()) {
    return s;
  }
  if (absl::Status s = file_->Append(absl::string_view(trailer, kTrailerBytes)); !s.ok()) {
    return Annotate(s, "writing", tmp_path_);
  }
  meta_.end_index = end_index;
  meta_.bytes = file_->Size();
  if (absl::Status s = file_->Flush(); !s.ok()) return Annotate(s, "writing", tmp_path_);
  KV_FAILPOINT_CRASH(fp::kSnapshotAfterTmpWrite);
  if (absl::Status s = fp::InjectedIoError(fp::kSnapshotFsync, "fdatasync", tmp_path_); !s.ok()) {
    return s;
  }
  if (absl::Status s = file_->Sync(); !s.ok()) return Annotate(s, "syncing", tmp_path_);
  KV_FAILPOINT_CRASH(fp::kSnapshotAfterFsync);
  if (absl::Status s = file_->Close(); !s.ok()) return Annotate(s, "closing", tmp_path_);
  if (absl::Status s = fs_->Rename(tmp_path_, final_path_); !s.ok()) {
    return Annotate(s, absl::StrCat("renaming to ", final_path_), tmp_path_);
  }
  renamed_ = true;
  KV_FAILPOINT_CRASH(fp::kSnapshotAfterRename);
  // Until the directory is synced a power cut may undo the rename; the file
  // itself is complete and synced, so either outcome is a valid directory.
  if (absl::Status s = fs_->SyncDir(dir_); !s.ok()) return Annotate(s, "syncing directory", dir_);
  KV_FAILPOINT_CRASH(fp::kSnapshotAfterDirFsync);
  return absl::OkStatus();
}

absl::StatusOr<SnapshotMeta> LoadSnapshot(
    FileSystem* fs, const std::string& path,
    const std::function<absl::Status(absl::string_view key, absl::string_view value,
                                     uint64_t version, int64_t expire_unix_ms)>& fn) {
  absl::StatusOr<std::unique_ptr<SequentialFile>> file = fs->OpenSequential(path);
  if (!file.ok()) return Annotate(file.status(), "opening", path);
  absl::StatusOr<uint64_t> size = fs->FileSize(path);
  if (!size.ok()) return Annotate(size.status(), "sizing", path);
  SnapshotLoader loader(path, *std::move(file), *size);
  return loader.Load(fn);
}

absl::StatusOr<std::vector<SnapshotMeta>> ListSnapshots(FileSystem* fs, const std::string& dir) {
  absl::StatusOr<std::vector<std::string>> names = fs->ListDir(dir);
  if (!names.ok()) return Annotate(names.status(), "listing", dir);
  std::vector<SnapshotMeta> snapshots;
  for (const std::string& name : *names) {
    SnapshotMeta meta;
    if (!ParseSnapshotFileName(name, &meta.start_index)) continue;  // .tmp files included.
    meta.path = JoinPath(dir, name);
    absl::StatusOr<uint64_t> size = fs->FileSize(meta.path);
    if (absl::IsNotFound(size.status())) continue;  // Pruned since the listing.
    if (!size.ok()) return Annotate(size.status(), "sizing", meta.path);
    meta.bytes = *size;
    snapshots.push_back(std::move(meta));
  }
  std::sort(snapshots.begin(), snapshots.end(), [](const SnapshotMeta& a, const SnapshotMeta& b) {
    return a.start_index > b.start_index;
  });
  return snapshots;
}

absl::Status PruneSnapshots(FileSystem* fs, const std::string& dir, size_t keep) {
  absl::StatusOr<std::vector<std::string>> names = fs->ListDir(dir);
  if (!names.ok()) return Annotate(names.status(), "listing", dir);
  std::vector<std::pair<uint64_t, std::string>> snapshots;
  std::vector<std::string> doomed;
  for (const std::string& name : *names) {
    uint64_t start_index = 0;
    if (ParseSnapshotFileName(name, &start_index)) {
      snapshots.emplace_back(start_index, name);
    } else if (ParseTmpFileName(name, &start_index)) {
      doomed.push_back(name);
    }
  }
  std::sort(snapshots.begin(), snapshots.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = keep; i < snapshots.size(); ++i) doomed.push_back(snapshots[i].second);

  // Keep going past a failure so one stuck file does not pin all the others.
  absl::Status first_error;
  bool removed = false;
  for (const std::string& name : doomed) {
    const std::string path = JoinPath(dir, name);
    if (absl::Status s = fs->Remove(path); s.ok()) {
      removed = true;
    } else if (first_error.ok()) {
      first_error = Annotate(s, "removing", path);
    }
  }
  if (removed) {
    if (absl::Status s = fs->SyncDir(dir); !s.ok() && first_error.ok()) {
      first_error = Annotate(s, "syncing directory", dir);
    }
  }
  return first_error;
}

absl::StatusOr<SnapshotMeta> VerifySnapshot(FileSystem* fs, const std::string& path) {
  return LoadSnapshot(fs, path, [](absl::string_view, absl::string_view, uint64_t, int64_t) {
    return absl::OkStatus();
  });
}

}  // namespace kvstore
