#include "common/storage/wal.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/storage/log_reader.h"
#include "common/storage/storage_failpoints.h"
#include "glog/logging.h"

namespace kvstore {
namespace {

using RecordFn = std::function<absl::Status(const log::LogRecord&)>;

struct SegmentFile {
  uint64_t first_index;
  std::string path;
};

// Same code, with the operation and the file in front of the message.
absl::Status Annotate(const absl::Status& s, absl::string_view what, const std::string& path) {
  return absl::Status(s.code(), absl::StrCat(what, " ", path, ": ", s.message()));
}

absl::StatusOr<std::vector<SegmentFile>> ListSegments(FileSystem* fs, const std::string& dir) {
  absl::StatusOr<std::vector<std::string>> names = fs->ListDir(dir);
  if (!names.ok()) return Annotate(names.status(), "listing", dir);
  std::vector<SegmentFile> segments;
  for (const std::string& name : *names) {
    uint64_t first_index;
    // Anything else in the directory (snapshots, .torn-*, .broken) is not ours to read.
    if (log::ParseSegmentFileName(name, &first_index)) {
      segments.push_back({first_index, JoinPath(dir, name)});
    }
  }
  std::sort(segments.begin(), segments.end(), [](const SegmentFile& a, const SegmentFile& b) {
    return a.first_index < b.first_index;
  });
  return segments;
}

bool IsAllZero(absl::string_view data) {
  return std::all_of(data.begin(), data.end(), [](char c) { return c == 0; });
}

// `base` if no such file exists yet, else base.1, base.2, ...: a second cut at
// the same place must not overwrite the copy of the first.
std::string UnusedPath(FileSystem* fs, const std::string& base) {
  std::string path = base;
  for (int n = 1; fs->Exists(path); ++n) path = absl::StrCat(base, ".", n);
  return path;
}

// Writes `data` to a new file and makes it durable, directory entry included,
// so the copy exists before the original is cut.
absl::Status KeepCopy(FileSystem* fs, const std::string& dir, const std::string& path,
                      absl::string_view data) {
  absl::StatusOr<std::unique_ptr<WritableFile>> file = fs->CreateFile(path);
  if (!file.ok()) return Annotate(file.status(), "creating", path);
  if (absl::Status s = (*file)->Append(data); !s.ok()) return Annotate(s, "writing", path);
  if (absl::Status s = (*file)->Sync(); !s.ok()) return Annotate(s, "syncing", path);
  if (absl::Status s = (*file)->Close(); !s.ok()) return Annotate(s, "closing", path);
  if (absl::Status s = fs->SyncDir(dir); !s.ok()) return Annotate(s, "syncing directory", dir);
  return absl::OkStatus();
}

// The first problem in a segment.
struct Damage {
  uint64_t offset = 0;  // Where the log has to be cut.
  std::string what;
  // True for a record that fails its own checks, the only damage the torn-tail
  // rule may forgive. A wrong index or a bad segment header is never torn.
  bool failed_checks = false;
  // For failed_checks: where a valid record behind the damage could start. Past
  // the payload of a record whose header is sound, because bytes inside a
  // payload are user data and may well spell a record.
  uint64_t scan_from = 0;
};

// Checks one whole segment file: its header, then each record, whose indexes
// must run on from first_index. Passes every sound record before the first
// problem to on_record; an error from it is returned. *records counts them.
absl::Status CheckSegment(absl::string_view data, uint64_t first_index, const RecordFn& on_record,
                          uint64_t* records, std::optional<Damage>* damage) {
  *records = 0;
  damage->reset();
  uint64_t header_index;
  if (!log::ParseSegmentHeader(data, &header_index)) {
    *damage = Damage{0, "bad segment header"};
    return absl::OkStatus();
  }
  if (header_index != first_index) {
    *damage = Damage{0, absl::StrCat("segment header says first index ", header_index,
                                     " but the file name says ", first_index)};
    return absl::OkStatus();
  }
  log::LogReader reader(data, log::kSegmentHeaderSize);
  log::LogRecord record;
  for (;;) {
    const log::ReadStatus status = reader.Next(&record);
    if (status == log::ReadStatus::kEndOfInput) return absl::OkStatus();
    if (status != log::ReadStatus::kRecord) {
      const bool header_sound = status == log::ReadStatus::kTruncatedPayload ||
                                status == log::ReadStatus::kBadPayloadCheck;
      *damage =
          Damage{record.offset, log::ReadStatusName(status), true,
                 header_sound ? record.offset + log::kRecordHeaderSize + record.header.payload_len
                              : record.offset + 1};
      return absl::OkStatus();
    }
    const uint64_t expected = first_index + *records;
    if (record.header.index != expected) {
      *damage = Damage{record.offset, absl::StrCat("record has index ", record.header.index,
                                                   " where ", expected, " was expected")};
      return absl::OkStatus();
    }
    if (absl::Status s = on_record(record); !s.ok()) return s;
    ++*records;
  }
}

std::string RepairHint(const std::string& dir) {
  return absl::StrCat("run `kv-shard --repair --data-dir=", dir,
                      "` (it keeps a copy of what it cuts)");
}

absl::Status DamagedLog(const std::string& dir, const std::string& path, uint64_t offset,
                        absl::string_view what) {
  return absl::DataLossError(absl::StrCat(
      "log segment ", path, " is damaged at byte offset ", offset, ": ", what,
      ". This is not a torn write at the end of the log, so start-up stops rather than drop "
      "records silently. To cut the log there, ",
      RepairHint(dir)));
}

}  // namespace

Wal::Wal(FileSystem* fs, std::string dir, WalOptions options)
    : fs_(fs), dir_(std::move(dir)), options_(options) {}

Wal::~Wal() {
  if (active_ == nullptr) return;
  // Close only flushes; Append already did. An error here loses nothing that
  // was reported written, but it says the disk is in trouble.
  if (absl::Status s = active_->Close(); !s.ok()) {
    LOG(WARNING) << "Closing " << segments_.back().path << ": " << s;
  }
}

absl::StatusOr<std::unique_ptr<Wal>> Wal::Open(
    FileSystem* fs, const std::string& dir, const WalOptions& options, uint64_t replay_from,
    const std::function<absl::Status(const WalRecord&)>& apply) {
  if (absl::Status s = fs->CreateDirs(dir); !s.ok()) return Annotate(s, "creating", dir);
  absl::StatusOr<std::vector<SegmentFile>> files = ListSegments(fs, dir);
  if (!files.ok()) return files.status();
  std::unique_ptr<Wal> wal(new Wal(fs, dir, options));

  uint64_t next = 0;  // Index after the last record read; 0 before the first segment read.
  uint64_t replayed = 0;
  const RecordFn replay = [&](const log::LogRecord& r) {
    if (r.header.index < replay_from) return absl::OkStatus();
    ++replayed;
    return apply(WalRecord{r.header.index, r.header.epoch, r.header.type, r.payload});
  };
  for (size_t i = 0; i < files->size(); ++i) {
    const SegmentFile& file = (*files)[i];
    const bool last = i + 1 == files->size();
    // A segment's records end just before the next segment's first index.
    if (!last && (*files)[i + 1].first_index <= replay_from) {
      absl::StatusOr<uint64_t> size = fs->FileSize(file.path);
      if (!size.ok()) return Annotate(size.status(), "sizing", file.path);
      wal->segments_.push_back({file.first_index, file.path, *size});
      continue;
    }
    absl::StatusOr<std::string> data = fs->ReadFile(file.path);
    if (!data.ok()) return Annotate(data.status(), "reading", file.path);
    if (next != 0 && file.first_index != next) {
      return DamagedLog(dir, file.path, 0,
                        absl::StrCat("segment starts at index ", file.first_index,
                                     " but the one before it ends at index ", next - 1));
    }
    uint64_t records;
    std::optional<Damage> damage;
    if (absl::Status s = CheckSegment(*data, file.first_index, replay, &records, &damage);
        !s.ok()) {
      return s;
    }
    next = file.first_index + records;
    uint64_t size = data->size();
    if (damage.has_value()) {
      if (!last) return DamagedLog(dir, file.path, damage->offset, damage->what);
      if (damage->offset == 0) {
        // A crash between creating a segment and writing its header leaves it
        // short or zero-filled. Nothing in it was ever acknowledged.
        if (data->size() >= log::kSegmentHeaderSize && !IsAllZero(*data)) {
          return DamagedLog(dir, file.path, 0, damage->what);
        }
        std::string kept_in = "nothing to keep";
        if (!data->empty()) {
          kept_in = UnusedPath(fs, absl::StrCat(file.path, ".torn-0"));
          if (absl::Status s = KeepCopy(fs, dir, kept_in, *data); !s.ok()) return s;
        }
        LOG(WARNING) << "Log segment " << file.path << " has a torn header at offset 0 ("
                     << data->size() << " bytes, short or all zero); removing it, "
                     << (data->empty() ? kept_in : absl::StrCat("copy kept in ", kept_in));
        if (absl::Status s = fs->Remove(file.path); !s.ok()) {
          return Annotate(s, "removing", file.path);
        }
        continue;
      }
      if (!damage->failed_checks) return DamagedLog(dir, file.path, damage->offset, damage->what);
      const uint64_t valid = log::FindValidRecord(*data, damage->scan_from);
      if (valid != log::kNoRecord) {
        return DamagedLog(
            dir, file.path, damage->offset,
            absl::StrCat(damage->what, ", and a valid record follows at offset ", valid));
      }
      const uint64_t cut = data->size() - damage->offset;
      const std::string copy = UnusedPath(fs, absl::StrCat(file.path, ".torn-", damage->offset));
      LOG(WARNING) << "Log segment " << file.path << " ends in a torn write (" << damage->what
                   << ") at offset " << damage->offset << "; cutting " << cut << " bytes, kept in "
                   << copy;
      if (absl::Status s = KeepCopy(fs, dir, copy, absl::string_view(*data).substr(damage->offset));
          !s.ok()) {
        return s;
      }
      if (absl::Status s = fs->Truncate(file.path, damage->offset); !s.ok()) {
        return Annotate(s, "truncating", file.path);
      }
      size = damage->offset;
    }
    wal->segments_.push_back({file.first_index, file.path, size});
  }

  if (!wal->segments_.empty()) {
    const Segment& tail = wal->segments_.back();
    // next - 1 is the last record (first_index - 1 of an empty last segment).
    // next is not 0: the last segment is always read, even one removed above.
    if (next > wal->segments_.front().first_index) wal->last_index_.store(next - 1);
    // Whatever was replayed must not vanish in a power cut later: the process
    // that wrote it may have died before its fsync.
    absl::StatusOr<std::unique_ptr<WritableFile>> active = fs->OpenAppendable(tail.path);
    if (!active.ok()) return Annotate(active.status(), "opening", tail.path);
    wal->active_ = *std::move(active);
    if (absl::Status s = wal->active_->Sync(); !s.ok()) return Annotate(s, "syncing", tail.path);
  }
  if (absl::Status s = fs->SyncDir(dir); !s.ok()) return Annotate(s, "syncing directory", dir);
  wal->durable_index_.store(wal->last_index_.load());
  wal->PublishPositions();
  LOG(INFO) << "Opened log " << dir << ": " << wal->segment_count() << " segments, indexes "
            << wal->first_index() << ".." << wal->last_index() << ", replayed " << replayed
            << " records from index " << replay_from;
  return wal;
}

absl::StatusOr<std::string> Wal::Repair(FileSystem* fs, const std::string& dir) {
  absl::StatusOr<std::vector<SegmentFile>> files = ListSegments(fs, dir);
  if (!files.ok()) return files.status();
  const RecordFn ignore = [](const log::LogRecord&) { return absl::OkStatus(); };
  uint64_t kept = 0;
  uint64_t next = 0;
  for (size_t i = 0; i < files->size(); ++i) {
    const SegmentFile& file = (*files)[i];
    absl::StatusOr<std::string> data = fs->ReadFile(file.path);
    if (!data.ok()) return Annotate(data.status(), "reading", file.path);
    uint64_t records = 0;
    std::optional<Damage> damage;
    if (next != 0 && file.first_index != next) {
      damage = Damage{0, absl::StrCat("segment starts at index ", file.first_index,
                                      " but the one before it ends at index ", next - 1)};
    } else {
      if (absl::Status s = CheckSegment(*data, file.first_index, ignore, &records, &damage);
          !s.ok()) {
        return s;
      }
      next = file.first_index + records;
    }
    kept += records;
    if (!damage.has_value()) continue;

    std::vector<std::string> report;
    report.push_back(absl::StrCat("Repaired log ", dir, ": ", file.path,
                                  " is damaged at byte offset ", damage->offset, " (", damage->what,
                                  ")."));
    // With no sound segment header left, the whole file goes.
    if (damage->offset < log::kSegmentHeaderSize) {
      const std::string broken = UnusedPath(fs, absl::StrCat(file.path, ".broken"));
      if (absl::Status s = fs->Rename(file.path, broken); !s.ok()) {
        return Annotate(s, "renaming", file.path);
      }
      report.push_back(absl::StrCat("Moved ", file.path, " to ", broken, "."));
    } else {
      const std::string broken = UnusedPath(fs, absl::StrCat(file.path, ".broken"));
      const uint64_t cut = data->size() - damage->offset;
      if (absl::Status s =
              KeepCopy(fs, dir, broken, absl::string_view(*data).substr(damage->offset));
          !s.ok()) {
        return s;
      }
      if (absl::Status s = fs->Truncate(file.path, damage->offset); !s.ok()) {
        return Annotate(s, "truncating", file.path);
      }
      report.push_back(absl::StrCat("Cut ", cut, " bytes from ", file.path, " at offset ",
                                    damage->offset, "; they are kept in ", broken, "."));
    }
    for (size_t j = i + 1; j < files->size(); ++j) {
      const std::string& path = (*files)[j].path;
      const std::string broken = UnusedPath(fs, absl::StrCat(path, ".broken"));
      if (absl::Status s = fs->Rename(path, broken); !s.ok()) return Annotate(s, "renaming", path);
      report.push_back(absl::StrCat("Moved later segment ", path, " to ", broken, "."));
    }
    if (absl::Status s = fs->SyncDir(dir); !s.ok()) return Annotate(s, "syncing directory", dir);
    report.push_back(kept == 0 ? std::string("Kept no records.")
                               : absl::StrCat("Kept ", kept, " records, indexes ",
                                              (*files)[0].first_index, "..", next - 1, "."));
    for (const std::string& line : report) LOG(WARNING) << line;
    return absl::StrJoin(report, "\n");
  }
  return absl::StrCat("Log ", dir, ": nothing to repair (", files->size(), " segments, ", kept,
                      " records).");
}

absl::Status Wal::FailWrites(absl::Status s) {
  LOG(ERROR) << "Log " << dir_ << " refuses further writes: " << s;
  sticky_error_ = s;
  return s;
}

absl::Status Wal::StartSegment(uint64_t first_index) {
  namespace fp = storage_failpoints;
  const std::string path = JoinPath(dir_, log::SegmentFileName(first_index));
  if (absl::Status s = fp::InjectedIoError(fp::kWalSegmentCreate, "open", path); !s.ok()) {
    return FailWrites(s);
  }
  absl::StatusOr<std::unique_ptr<WritableFile>> file = fs_->CreateFile(path);
  if (!file.ok()) return FailWrites(Annotate(file.status(), "creating", path));
  std::string header;
  log::AppendSegmentHeader(first_index, &header);
  if (absl::Status s = (*file)->Append(header); !s.ok()) {
    return FailWrites(Annotate(s, "writing", path));
  }
  active_ = *std::move(file);
  segments_.push_back({first_index, path, header.size()});
  dir_dirty_ = true;
  KV_FAILPOINT_CRASH(storage_failpoints::kWalAfterSegmentCreate);
  return absl::OkStatus();
}

absl::Status Wal::Append(absl::string_view records, uint64_t first, uint64_t last) {
  if (!sticky_error_.ok()) return sticky_error_;
  if (first == 0 || last < first || records.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("appending to log ", dir_,
                                                   ": bad batch of indexes ", first, "..", last,
                                                   " in ", records.size(), " bytes"));
  }
  const uint64_t last_index = last_index_.load(std::memory_order_relaxed);
  const uint64_t want = last_index != 0 ? last_index + 1 : next_index_;
  if (want != 0 && first != want) {
    return absl::FailedPreconditionError(absl::StrCat(
        "appending to log ", dir_, ": batch starts at index ", first, " but must start at ", want));
  }
  if (last_index == 0 && !segments_.empty() && segments_.back().first_index != first) {
    // An empty log left by a crash may hold a header-only segment named for
    // another index. It holds nothing, so it can go.
    const std::string path = segments_.back().path;
    absl::Status closed = active_->Close();
    active_.reset();
    segments_.pop_back();
    if (!closed.ok()) return FailWrites(Annotate(closed, "closing", path));
    if (absl::Status s = fs_->Remove(path); !s.ok()) {
      return FailWrites(Annotate(s, "removing", path));
    }
    dir_dirty_ = true;
  }
  if (segments_.empty()) {
    if (absl::Status s = StartSegment(first); !s.ok()) return s;
  } else if (segments_.back().bytes >= options_.segment_bytes &&
             last_index >= segments_.back().first_index) {
    // A segment is left only once it holds a record, so no segment but the
    // last is ever empty. Synced before it is left: recovery reads any segment
    // but the last strictly, so it must not end in a write the OS never made.
    const std::string& path = segments_.back().path;
    if (absl::Status s = SyncActive(); !s.ok()) return FailWrites(Annotate(s, "syncing", path));
    if (absl::Status s = active_->Close(); !s.ok()) {
      return FailWrites(Annotate(s, "closing", path));
    }
    active_.reset();
    if (absl::Status s = StartSegment(first); !s.ok()) return s;
  }
  Segment& tail = segments_.back();
  if (absl::Status s =
          storage_failpoints::InjectedIoError(storage_failpoints::kWalWrite, "write", tail.path);
      !s.ok()) {
    return FailWrites(s);
  }
  if (absl::Status s = active_->Append(records); !s.ok()) {
    return FailWrites(Annotate(s, "appending to", tail.path));
  }
  if (absl::Status s = active_->Flush(); !s.ok()) {
    return FailWrites(Annotate(s, "flushing", tail.path));
  }
  tail.bytes += records.size();
  next_index_ = 0;
  last_index_.store(last, std::memory_order_release);
  PublishPositions();
  KV_FAILPOINT_CRASH(storage_failpoints::kWalAfterWrite);
  return absl::OkStatus();
}

absl::Status Wal::Sync() {
  if (!sticky_error_.ok()) return sticky_error_;
  if (active_ != nullptr) {
    if (absl::Status s = SyncActive(); !s.ok()) {
      return FailWrites(Annotate(s, "syncing", segments_.back().path));
    }
  }
  // After the file: a directory entry must not become durable pointing at a
  // segment whose header never reached the disk.
  if (dir_dirty_) {
    if (absl::Status s = fs_->SyncDir(dir_); !s.ok()) {
      return FailWrites(Annotate(s, "syncing directory", dir_));
    }
    dir_dirty_ = false;
  }
  durable_index_.store(last_index_.load(std::memory_order_relaxed), std::memory_order_release);
  return absl::OkStatus();
}

absl::Status Wal::RemoveSegmentsThrough(uint64_t index) {
  // Oldest first, so a power cut before the next directory sync can bring back
  // only a prefix of them, which leaves the indexes contiguous.
  while (segments_.size() > 1 && segments_[1].first_index - 1 <= index) {
    if (absl::Status s = fs_->Remove(segments_.front().path); !s.ok()) {
      return Annotate(s, "removing", segments_.front().path);
    }
    LOG(INFO) << "Removed log segment " << segments_.front().path << " (indexes "
              << segments_.front().first_index << ".." << segments_[1].first_index - 1 << ")";
    segments_.erase(segments_.begin());
    dir_dirty_ = true;
    PublishPositions();
    KV_FAILPOINT_CRASH(storage_failpoints::kWalAfterSegmentDelete);
  }
  return absl::OkStatus();
}

absl::Status Wal::Reset(uint64_t next_index) {
  if (next_index == 0) {
    return absl::InvalidArgumentError(absl::StrCat("resetting log ", dir_, " to index 0"));
  }
  if (active_ != nullptr) {
    // The file is deleted next; an error flushing it cannot lose anything kept.
    if (absl::Status s = active_->Close(); !s.ok()) {
      LOG(WARNING) << "Closing " << segments_.back().path << " before removing it: " << s;
    }
    active_.reset();
  }
  while (!segments_.empty()) {
    const std::string& path = segments_.back().path;
    if (absl::Status s = fs_->Remove(path); !s.ok()) return Annotate(s, "removing", path);
    segments_.pop_back();
    last_index_.store(0);
    PublishPositions();
  }
  // Durable at once: old segments coming back after a power cut would sit
  // before the snapshot that replaced them, with a gap up to next_index.
  if (absl::Status s = fs_->SyncDir(dir_); !s.ok()) return Annotate(s, "syncing directory", dir_);
  dir_dirty_ = false;
  next_index_ = next_index;
  last_index_.store(0, std::memory_order_release);
  durable_index_.store(0, std::memory_order_release);
  PublishPositions();
  LOG(INFO) << "Reset log " << dir_ << "; it continues at index " << next_index;
  return absl::OkStatus();
}

absl::Status Wal::SyncActive() {
  namespace fp = storage_failpoints;
  KV_FAILPOINT_CRASH(fp::kWalBeforeFsync);
  if (absl::Status s = fp::InjectedIoError(fp::kWalFsync, "fdatasync", segments_.back().path);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = active_->Sync(); !s.ok()) return s;
  KV_FAILPOINT_CRASH(fp::kWalAfterFsync);
  return absl::OkStatus();
}

void Wal::PublishPositions() {
  const uint64_t last = last_index_.load(std::memory_order_relaxed);
  uint64_t bytes = 0;
  for (const Segment& segment : segments_) bytes += segment.bytes;
  first_index_.store(last == 0 || segments_.empty() ? 0 : segments_.front().first_index,
                     std::memory_order_release);
  bytes_.store(bytes, std::memory_order_release);
  segment_count_.store(static_cast<uint32_t>(segments_.size()), std::memory_order_release);
}

}  // namespace kvstore
