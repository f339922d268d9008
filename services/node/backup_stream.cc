#include "services/node/backup_stream.h"

#include <algorithm>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/backup/backup_image.h"
#include "common/server/grpc_status.h"
#include "common/storage/log_cursor.h"
#include "common/storage/log_format.h"
#include "common/storage/snapshot.h"
#include "common/storage/version.h"
#include "glog/logging.h"

namespace kvstore {
namespace {

// Where a restore keeps the files it receives, inside the data directory.
constexpr char kRestoreDir[] = "restore-incoming";
constexpr int kImageAttempts = 3;

class BackupStream final : public grpc::ServerWriteReactor<v1::BackupChunk> {
 public:
  BackupStream(Store* store, v1::StatusResponse self, const v1::BackupRequest& request)
      : store_(store),
        self_(std::move(self)),
        fresh_(request.fresh_snapshot()),
        chunk_bytes_(request.chunk_bytes() == 0 ? kDefaultBackupChunkBytes
                                                : std::clamp<uint32_t>(request.chunk_bytes(),
                                                                       4096, 16u << 20)) {
    thread_ = std::thread([this] { Run(); });
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock l(&mu_);
    write_pending_ = false;
    write_ok_ = ok;
  }
  void OnDone() override {
    thread_.join();
    delete this;
  }

 private:
  void Run() {
    absl::Status status = Produce();
    if (!status.ok()) {
      LOG(WARNING) << "Backup of " << store_->dir() << " failed: " << status;
    } else {
      LOG(INFO) << "Backup of " << store_->dir() << " sent, " << sent_bytes_ << " bytes";
    }
    Finish(ToGrpcStatus(status));
  }

  // Sends one message and waits until gRPC is done with it. False when the
  // client went away.
  bool Send(v1::BackupChunk message) {
    {
      absl::MutexLock l(&mu_);
      message_ = std::move(message);
      write_pending_ = true;
    }
    StartWrite(&message_);
    absl::MutexLock l(&mu_);
    mu_.Await(absl::Condition(
        +[](bool* pending) { return !*pending; }, &write_pending_));
    return write_ok_;
  }

  absl::Status Cancelled() { return absl::CancelledError("the client closed the backup stream"); }

  // Sends `data` as chunks of `file` from *offset on (whole chunks only
  // unless `last`), leaving the remainder in *data.
  absl::Status SendChunks(const std::string& file, bool last, std::string* data,
                          uint64_t* offset) {
    size_t pos = 0;
    while (data->size() - pos >= chunk_bytes_ || (last && pos < data->size())) {
      const size_t n = std::min<size_t>(chunk_bytes_, data->size() - pos);
      v1::BackupChunk message;
      v1::FileChunk* chunk = message.mutable_chunk();
      chunk->set_file(file);
      chunk->set_offset(*offset);
      chunk->set_data(data->substr(pos, n));
      chunk->set_checksum(BackupChunkChecksum(chunk->data()));
      if (!Send(std::move(message))) return Cancelled();
      pos += n;
      *offset += n;
      sent_bytes_ += n;
    }
    data->erase(0, pos);
    return absl::OkStatus();
  }

  absl::Status EndFile(const std::string& file, uint64_t bytes) {
    v1::BackupChunk message;
    message.mutable_file_end()->set_file(file);
    message.mutable_file_end()->set_bytes(bytes);
    files_.push_back(file);
    return Send(std::move(message)) ? absl::OkStatus() : Cancelled();
  }

  absl::Status Produce() {
    if (absl::Status readable = store_->CheckReadable(); !readable.ok()) return readable;
    // The snapshot and log can be pruned by a snapshot taken meanwhile; before
    // anything is sent, that just means: pick again.
    absl::Status last_error;
    for (int attempt = 0; attempt < kImageAttempts; ++attempt) {
      last_error = CutImage();
      if (last_error.ok()) break;
      if (!absl::IsNotFound(last_error)) return last_error;
    }
    if (!last_error.ok()) return absl::AbortedError(absl::StrCat(
        "the node's snapshots changed while the backup started; run it again: ",
        last_error.message()));

    v1::BackupChunk header_message;
    v1::BackupHeader* header = header_message.mutable_header();
    header->set_shard(self_.shard());
    header->set_node_id(self_.node_id());
    header->set_address(self_.address());
    header->set_role(self_.role());
    header->set_last_index(last_index_);
    header->set_last_epoch(last_epoch_);
    header->set_snapshot_start_index(snapshot_.start_index);
    header->set_snapshot_end_index(snapshot_.end_index);
    header->set_created_unix_ms(created_unix_ms_);
    header->set_chunk_bytes(chunk_bytes_);
    if (!Send(std::move(header_message))) return Cancelled();

    // The snapshot, as it is on disk (open already, so pruning cannot take it).
    const std::string snapshot_name = SnapshotFileName(snapshot_.start_index);
    uint64_t offset = 0;
    std::string data;
    for (;;) {
      std::string piece;
      if (absl::Status s = snapshot_file_->Read(chunk_bytes_, &piece); !s.ok()) return s;
      if (piece.empty()) break;
      data += piece;
      if (absl::Status s = SendChunks(snapshot_name, false, &data, &offset); !s.ok()) return s;
    }
    if (absl::Status s = SendChunks(snapshot_name, true, &data, &offset); !s.ok()) return s;
    if (offset != snapshot_.bytes && snapshot_.bytes != 0) {
      return absl::DataLossError(absl::StrCat("snapshot ", snapshot_.path, " changed size while ",
                                              "it was read (", offset, " bytes, verified at ",
                                              snapshot_.bytes, ")"));
    }
    if (absl::Status s = EndFile(snapshot_name, offset); !s.ok()) return s;

    // The log after it, as one segment: the records' bytes as the node holds them.
    if (last_index_ > snapshot_.start_index) {
      const std::string log_name = log::SegmentFileName(snapshot_.start_index + 1);
      LogCursor cursor(store_->fs(), store_->dir());
      cursor.Seek(snapshot_.start_index + 1);
      offset = 0;
      data.clear();
      log::AppendSegmentHeader(snapshot_.start_index + 1, &data);
      while (cursor.next_index() <= last_index_) {
        std::string records;
        uint64_t first = 0;
        uint64_t last = 0;
        absl::Status s = cursor.Read(last_index_, chunk_bytes_, &records, &first, &last);
        if (absl::IsNotFound(s)) {
          return absl::AbortedError(absl::StrCat(
              "a snapshot taken during the backup removed log index ", cursor.next_index(),
              " it was sending; run the backup again (--fresh makes the log part short)"));
        }
        if (!s.ok()) return s;
        if (first == 0) {
          return absl::InternalError(absl::StrCat("the log has no record ", cursor.next_index(),
                                                  " although index ", last_index_,
                                                  " was written"));
        }
        data += records;
        if (s = SendChunks(log_name, false, &data, &offset); !s.ok()) return s;
      }
      if (absl::Status s = SendChunks(log_name, true, &data, &offset); !s.ok()) return s;
      if (absl::Status s = EndFile(log_name, offset); !s.ok()) return s;
    }

    v1::BackupChunk end;
    for (const std::string& f : files_) end.mutable_end()->add_files(f);
    return Send(std::move(end)) ? absl::OkStatus() : Cancelled();
  }

  // Chooses the snapshot, opens it, and fixes the image's last index and epoch.
  absl::Status CutImage() {
    absl::StatusOr<SnapshotMeta> meta =
        fresh_ ? store_->TakeSnapshot() : store_->NewestSnapshot();
    if (!meta.ok()) return meta.status();
    absl::StatusOr<std::unique_ptr<SequentialFile>> file =
        store_->fs()->OpenSequential(meta->path);
    if (!file.ok()) return file.status();
    absl::StatusOr<uint64_t> size = store_->fs()->FileSize(meta->path);
    if (!size.ok()) return size.status();
    meta->bytes = *size;
    const uint64_t written = store_->written_index();
    if (written < meta->end_index) {
      return absl::UnavailableError(absl::StrCat(
          "this node's log (index ", written, ") has not reached its snapshot's end index ",
          meta->end_index, "; retry once it has caught up"));
    }
    uint64_t epoch = meta->epoch;
    if (written > meta->start_index) {
      absl::StatusOr<uint64_t> at = LogCursor::EpochAt(store_->fs(), store_->dir(), written);
      if (!at.ok()) return at.status();
      epoch = *at;
    }
    snapshot_ = *meta;
    snapshot_file_ = *std::move(file);
    last_index_ = written;
    last_epoch_ = epoch;
    created_unix_ms_ = RealClock()->NowUnixMillis();
    return absl::OkStatus();
  }

  Store* const store_;
  const v1::StatusResponse self_;
  const bool fresh_;
  const uint32_t chunk_bytes_;

  SnapshotMeta snapshot_;
  std::unique_ptr<SequentialFile> snapshot_file_;
  uint64_t last_index_ = 0;
  uint64_t last_epoch_ = 0;
  int64_t created_unix_ms_ = 0;
  std::vector<std::string> files_;
  uint64_t sent_bytes_ = 0;

  absl::Mutex mu_;
  v1::BackupChunk message_;  // The message being written; touched only by the thread.
  bool write_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool write_ok_ ABSL_GUARDED_BY(mu_) = true;
  std::thread thread_;  // Last: started once everything above exists.
};

// True for the names Admin.Backup sends: snap-<digits>.snap, wal-<digits>.log.
bool ImageFileName(const std::string& name, bool* is_snapshot) {
  uint64_t index = 0;
  if (ParseSnapshotFileName(name, &index)) {
    *is_snapshot = true;
    return true;
  }
  if (log::ParseSegmentFileName(name, &index)) {
    *is_snapshot = false;
    return true;
  }
  return false;
}

class RestoreStream final : public grpc::ServerReadReactor<v1::BackupChunk> {
 public:
  RestoreStream(Store* store, ReplicationHooks* replication, v1::StatusResponse self,
                v1::RestoreResponse* response, std::atomic<bool>* busy)
      : store_(store),
        replication_(replication),
        self_(std::move(self)),
        response_(response),
        busy_(busy),
        dir_(JoinPath(store->dir(), kRestoreDir)) {
    thread_ = std::thread([this] { Run(); });
  }

  void OnReadDone(bool ok) override {
    absl::MutexLock l(&mu_);
    read_pending_ = false;
    read_ok_ = ok;
  }
  void OnDone() override {
    thread_.join();
    delete this;
  }

 private:
  // Reads the next message into message_; false at the end of the stream.
  bool Receive() {
    {
      absl::MutexLock l(&mu_);
      read_pending_ = true;
    }
    StartRead(&message_);
    absl::MutexLock l(&mu_);
    mu_.Await(absl::Condition(
        +[](bool* pending) { return !*pending; }, &read_pending_));
    return read_ok_;
  }

  void Run() {
    bool expected = false;
    absl::Status status;
    if (!busy_->compare_exchange_strong(expected, true)) {
      status = absl::FailedPreconditionError("another restore is running on this node");
    } else {
      status = Consume();
      RemoveIncoming();
      busy_->store(false);
    }
    if (status.ok()) {
      LOG(INFO) << "Restored " << response_->keys() << " keys into " << store_->dir()
                << " at index " << response_->index();
    } else {
      LOG(WARNING) << "Restore into " << store_->dir() << " refused: " << status;
    }
    Finish(ToGrpcStatus(status));
  }

  absl::Status CheckEmptyLeader() {
    if (replication_ != nullptr) {
      std::string leader;
      if (absl::Status s = replication_->CheckWritable(&leader); !s.ok()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "restore goes to the shard's leader", leader.empty() ? "" : absl::StrCat(" (", leader, ")"),
            ": ", s.message()));
      }
    }
    const StoreStatus st = store_->GetStatus();
    if (st.key_count != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "this node holds ", st.key_count, " keys: a restore installs only into an empty shard"));
    }
    return absl::OkStatus();
  }

  void RemoveIncoming() {
    absl::StatusOr<std::vector<std::string>> names = store_->fs()->ListDir(dir_);
    if (!names.ok()) return;
    for (const std::string& name : *names) {
      if (absl::Status s = store_->fs()->Remove(JoinPath(dir_, name)); !s.ok()) {
        LOG(WARNING) << "Removing " << JoinPath(dir_, name) << ": " << s;
      }
    }
  }

  absl::Status Consume() {
    if (!Receive()) return absl::InvalidArgumentError("the restore stream is empty");
    if (!message_.has_header()) {
      return absl::InvalidArgumentError("a restore stream starts with a BackupHeader");
    }
    const v1::BackupHeader header = message_.header();
    if (!header.shard().empty() && !self_.shard().empty() && header.shard() != self_.shard()) {
      return absl::FailedPreconditionError(absl::StrCat("the image is of shard ", header.shard(),
                                                        ", this node serves shard ",
                                                        self_.shard()));
    }
    if (absl::Status s = CheckEmptyLeader(); !s.ok()) return s;
    if (absl::Status s = store_->fs()->CreateDirs(dir_); !s.ok()) return s;
    RemoveIncoming();  // Leftovers of an interrupted restore.

    std::unique_ptr<WritableFile> file;
    std::string file_name;
    uint64_t file_bytes = 0;
    std::string snapshot_path;
    std::string log_path;
    bool ended = false;
    while (Receive()) {
      if (ended) return absl::InvalidArgumentError("messages after the BackupEnd");
      if (message_.has_chunk()) {
        const v1::FileChunk& chunk = message_.chunk();
        if (file == nullptr) {
          bool is_snapshot = false;
          if (!ImageFileName(chunk.file(), &is_snapshot)) {
            return absl::InvalidArgumentError(
                absl::StrCat("'", chunk.file(), "' is not a file of a backup image"));
          }
          std::string& path = is_snapshot ? snapshot_path : log_path;
          if (!path.empty()) {
            return absl::InvalidArgumentError(absl::StrCat("a second ",
                                                           is_snapshot ? "snapshot" : "log",
                                                           " file, ", chunk.file()));
          }
          path = JoinPath(dir_, chunk.file());
          absl::StatusOr<std::unique_ptr<WritableFile>> created = store_->fs()->CreateFile(path);
          if (!created.ok()) return created.status();
          file = *std::move(created);
          file_name = chunk.file();
          file_bytes = 0;
        }
        if (chunk.file() != file_name || chunk.offset() != file_bytes) {
          return absl::InvalidArgumentError(absl::StrCat(
              "chunk of ", chunk.file(), " at offset ", chunk.offset(), " out of order (expected ",
              file_name, " at ", file_bytes, ")"));
        }
        if (BackupChunkChecksum(chunk.data()) != chunk.checksum()) {
          return absl::DataLossError(absl::StrCat("backup file ", chunk.file(),
                                                  " is damaged: checksum mismatch in the chunk "
                                                  "at offset ",
                                                  chunk.offset()));
        }
        if (absl::Status s = file->Append(chunk.data()); !s.ok()) return s;
        file_bytes += chunk.data().size();
      } else if (message_.has_file_end()) {
        if (file == nullptr || message_.file_end().file() != file_name ||
            message_.file_end().bytes() != file_bytes) {
          return absl::DataLossError(absl::StrCat(
              "backup file ", message_.file_end().file(), " is incomplete: ", file_bytes,
              " bytes received, ", message_.file_end().bytes(), " sent"));
        }
        if (absl::Status s = file->Sync(); !s.ok()) return s;
        if (absl::Status s = file->Close(); !s.ok()) return s;
        file.reset();
      } else if (message_.has_end()) {
        ended = true;
      } else {
        return absl::InvalidArgumentError("a restore stream has one BackupHeader, at its start");
      }
    }
    if (!ended || file != nullptr) {
      return absl::InvalidArgumentError("the restore stream ended before its BackupEnd");
    }
    if (snapshot_path.empty()) return absl::InvalidArgumentError("the image has no snapshot");
    return Install(header, snapshot_path, log_path);
  }

  // Writes the image's state as one snapshot of this store, its versions new
  // (above this log's last index, at its epoch), and installs it.
  absl::Status Install(const v1::BackupHeader& header, const std::string& snapshot_path,
                       const std::string& log_path) {
    absl::StatusOr<Image> image = ReadImage(store_->fs(), snapshot_path, log_path);
    if (!image.ok()) return image.status();
    if (image->last_index != header.last_index()) {
      return absl::DataLossError(absl::StrCat("the image ends at index ", image->last_index,
                                              ", its header says ", header.last_index()));
    }
    if (absl::Status s = CheckEmptyLeader(); !s.ok()) return s;
    const int64_t now = RealClock()->NowUnixMillis();
    const uint64_t base = store_->last_index();
    const uint64_t epoch = store_->epoch();
    const uint64_t live = LiveKeys(*image, now);
    const uint64_t start = base + live;
    if (start > kMaxVersionIndex) {
      return absl::ResourceExhaustedError("the image has more keys than one epoch can version");
    }
    absl::StatusOr<std::unique_ptr<SnapshotWriter>> writer =
        SnapshotWriter::Create(store_->fs(), dir_, start, epoch, now);
    if (!writer.ok()) return writer.status();
    uint64_t index = base;
    for (const auto& [key, entry] : image->keys) {
      if (entry.expire_unix_ms != 0 && entry.expire_unix_ms <= now) continue;
      if (absl::Status s = (*writer)->Add(key, entry.value, MakeVersion(epoch, ++index),
                                          entry.expire_unix_ms);
          !s.ok()) {
        return s;
      }
    }
    absl::StatusOr<SnapshotMeta> written = (*writer)->Commit(start);
    if (!written.ok()) return written.status();
    // Nothing may have been written meanwhile: the install replaces the log.
    if (store_->last_index() != base || store_->GetStatus().key_count != 0) {
      return absl::FailedPreconditionError(
          "the shard was written to while the image was prepared; restore into a cluster no "
          "client writes to");
    }
    absl::StatusOr<SnapshotMeta> installed = store_->InstallSnapshot(written->path);
    if (!installed.ok()) return installed.status();
    response_->set_keys(live);
    response_->set_expired(image->keys.size() - live);
    response_->set_index(start);
    response_->set_epoch(epoch);
    return absl::OkStatus();
  }

  Store* const store_;
  ReplicationHooks* const replication_;
  const v1::StatusResponse self_;
  v1::RestoreResponse* const response_;
  std::atomic<bool>* const busy_;
  const std::string dir_;

  absl::Mutex mu_;
  v1::BackupChunk message_;  // Filled by gRPC between StartRead and OnReadDone.
  bool read_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool read_ok_ ABSL_GUARDED_BY(mu_) = true;
  std::thread thread_;  // Last: started once everything above exists.
};

}  // namespace

grpc::ServerWriteReactor<v1::BackupChunk>* StartBackupStream(Store* store,
                                                             v1::StatusResponse self,
                                                             const v1::BackupRequest& request) {
  return new BackupStream(store, std::move(self), request);
}

grpc::ServerReadReactor<v1::BackupChunk>* StartRestoreStream(Store* store,
                                                             ReplicationHooks* replication,
                                                             v1::StatusResponse self,
                                                             v1::RestoreResponse* response,
                                                             std::atomic<bool>* busy) {
  return new RestoreStream(store, replication, std::move(self), response, busy);
}

}  // namespace kvstore
