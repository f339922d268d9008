#include "tools/kvctl/cluster_backup.h"

#include <algorithm>
#include <chrono>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/backup/backup_image.h"
#include "common/config/units.h"
#include "common/storage/file_system.h"
#include "common/storage/log_format.h"
#include "common/storage/snapshot.h"
#include "common/topology/topology.h"
#include "grpcpp/client_context.h"
#include "kvstore/v1/admin.grpc.pb.h"
#include "kvstore/v1/kv.grpc.pb.h"

#ifndef KVSTORE_VERSION
#define KVSTORE_VERSION "dev"
#endif

namespace kvstore {
namespace {

absl::Status FromGrpc(const grpc::Status& status, const std::string& what) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(what, ": ", status.error_message()));
}

std::unique_ptr<grpc::ClientContext> ContextWithin(int64_t timeout_ms) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
  return context;
}

std::string Mib(uint64_t bytes) { return HumanBytes(bytes); }

// "\r"-rewritten progress on a terminal, at most ten times a second.
class Progress {
 public:
  explicit Progress(FILE* out) : out_(out) {}
  void Show(const std::string& line, bool force = false) {
    if (out_ == nullptr) return;
    const absl::Time now = absl::Now();
    if (!force && now - last_ < absl::Milliseconds(100)) return;
    last_ = now;
    std::fprintf(out_, "\r%-78s", line.c_str());
    std::fflush(out_);
  }
  void Done(const std::string& line) {
    if (out_ == nullptr) return;
    std::fprintf(out_, "\r%-78s\n", line.c_str());
    std::fflush(out_);
  }

 private:
  FILE* const out_;
  absl::Time last_ = absl::InfinitePast();
};

bool PlainName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos;
}

// The node a shard is backed up from: a ready replica that has caught up,
// else the leader.
std::string BackupSource(const v1::ShardClusterStatus& shard) {
  for (const v1::ClusterNodeStatus& node : shard.nodes()) {
    if (!node.has_status()) continue;
    const v1::StatusResponse& st = node.status();
    if (st.role() == "replica" && st.ready() && st.lag_entries() == 0 && !st.leader().empty()) {
      return node.address();
    }
  }
  return shard.leader();
}

std::string TopologyYaml(const v1::ClusterStatusResponse& cluster) {
  std::string out = absl::StrCat(
      "# The cluster's topology when it was backed up.\nvnodes: ", cluster.vnodes(), "\nshards:\n");
  for (const v1::ShardClusterStatus& s : cluster.shards()) {
    absl::StrAppend(&out, "  - name: ", s.name(), "\n    leader: ", s.leader(), "\n    replicas: [",
                    absl::StrJoin(s.replicas(), ", "), "]\n");
  }
  return out;
}

// Writes `data` to `path` durably under a temporary name first.
absl::Status WriteFileAtomically(FileSystem* fs, const std::string& dir, const std::string& name,
                                 const std::string& data) {
  const std::string tmp = JoinPath(dir, name + ".tmp");
  absl::StatusOr<std::unique_ptr<WritableFile>> file = fs->CreateFile(tmp);
  if (!file.ok()) return file.status();
  if (absl::Status s = (*file)->Append(data); !s.ok()) return s;
  if (absl::Status s = (*file)->Sync(); !s.ok()) return s;
  if (absl::Status s = (*file)->Close(); !s.ok()) return s;
  if (absl::Status s = fs->Rename(tmp, JoinPath(dir, name)); !s.ok()) return s;
  return fs->SyncDir(dir);
}

// Receives one node's image into `shard_dir`.
absl::StatusOr<ShardBackupInfo> BackupShard(const v1::ShardClusterStatus& shard,
                                            const std::string& source, const std::string& shard_dir,
                                            const ClusterBackupOptions& options, Progress* progress,
                                            const std::string& label) {
  FileSystem* fs = PosixFileSystem();
  auto stub = v1::Admin::NewStub(options.channel(source));
  auto context = ContextWithin(options.stream_timeout_ms);
  v1::BackupRequest request;
  request.set_fresh_snapshot(options.fresh_snapshot);
  std::unique_ptr<grpc::ClientReader<v1::BackupChunk>> reader =
      stub->Backup(context.get(), request);
  ShardBackupInfo info;
  info.shard = shard.name();
  info.source = source;
  std::unique_ptr<WritableFile> file;
  BackupFileInfo* current = nullptr;
  absl::Status failed;
  bool ended = false;
  uint64_t received = 0;
  v1::BackupChunk message;
  bool have_header = false;
  while (failed.ok() && reader->Read(&message)) {
    if (message.has_header()) {
      const v1::BackupHeader& h = message.header();
      info.role = h.role();
      info.last_index = h.last_index();
      info.last_epoch = h.last_epoch();
      info.snapshot_start_index = h.snapshot_start_index();
      info.created_unix_ms = h.created_unix_ms();
      info.chunk_bytes = h.chunk_bytes();
      have_header = true;
    } else if (message.has_chunk()) {
      const v1::FileChunk& chunk = message.chunk();
      if (!have_header || !PlainName(chunk.file())) {
        failed = absl::DataLossError(absl::StrCat("unexpected chunk of '", chunk.file(), "'"));
        break;
      }
      if (current == nullptr) {
        absl::StatusOr<std::unique_ptr<WritableFile>> created =
            fs->CreateFile(JoinPath(shard_dir, chunk.file()));
        if (!created.ok()) {
          failed = created.status();
          break;
        }
        file = *std::move(created);
        info.files.push_back(BackupFileInfo{chunk.file(), 0, {}});
        current = &info.files.back();
      }
      if (chunk.file() != current->name || chunk.offset() != current->bytes) {
        failed = absl::DataLossError(absl::StrCat("chunk of ", chunk.file(), " at offset ",
                                                  chunk.offset(), " out of order"));
        break;
      }
      const uint32_t checksum = BackupChunkChecksum(chunk.data());
      if (checksum != chunk.checksum()) {
        failed = absl::DataLossError(
            absl::StrCat("backup file ", chunk.file(), " from ", source,
                         " is damaged: checksum mismatch in the chunk at offset ", chunk.offset()));
        break;
      }
      if (failed = file->Append(chunk.data()); !failed.ok()) break;
      current->bytes += chunk.data().size();
      current->chunk_checksums.push_back(checksum);
      received += chunk.data().size();
      progress->Show(absl::StrCat(label, " ", shard.name(), " from ", source, ": ", Mib(received)));
    } else if (message.has_file_end()) {
      if (current == nullptr || message.file_end().file() != current->name ||
          message.file_end().bytes() != current->bytes) {
        failed = absl::DataLossError(
            absl::StrCat("backup file ", message.file_end().file(), " is incomplete"));
        break;
      }
      if (failed = file->Sync(); !failed.ok()) break;
      if (failed = file->Close(); !failed.ok()) break;
      file.reset();
      current = nullptr;
    } else if (message.has_end()) {
      ended = true;
    }
  }
  if (!failed.ok()) {
    context->TryCancel();
    (void)reader->Finish();  // The local failure is what matters.
    return failed;
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) {
    return FromGrpc(status, absl::StrCat("backup of shard ", shard.name(), " from ", source));
  }
  if (!ended || current != nullptr || info.files.empty()) {
    return absl::DataLossError(absl::StrCat("the backup stream of shard ", shard.name(), " from ",
                                            source, " ended early"));
  }
  // Read it back as restore will: every record, the key count at the image's time.
  const std::string snapshot = JoinPath(shard_dir, info.files[0].name);
  const std::string log = info.files.size() > 1 ? JoinPath(shard_dir, info.files[1].name) : "";
  absl::StatusOr<Image> image = ReadImage(fs, snapshot, log);
  if (!image.ok()) return image.status();
  if (image->last_index != info.last_index) {
    return absl::DataLossError(absl::StrCat("shard ", shard.name(), ": the image ends at index ",
                                            image->last_index, ", the node said ",
                                            info.last_index));
  }
  info.keys = LiveKeys(*image, info.created_unix_ms);
  return info;
}

// Files of a shard's image in its directory: the snapshot and the log ("" when none).
void ImagePaths(const std::string& dir, const ShardBackupInfo& shard, std::string* snapshot,
                std::string* log) {
  const std::string shard_dir = JoinPath(dir, shard.shard);
  snapshot->clear();
  log->clear();
  for (const BackupFileInfo& f : shard.files) {
    uint64_t index = 0;
    if (ParseSnapshotFileName(f.name, &index)) {
      *snapshot = JoinPath(shard_dir, f.name);
    } else {
      *log = JoinPath(shard_dir, f.name);
    }
  }
}

absl::StatusOr<BackupManifest> ReadManifest(const std::string& dir) {
  const std::string path = JoinPath(dir, kManifestFileName);
  if (!PosixFileSystem()->Exists(path)) {
    return absl::NotFoundError(
        absl::StrCat(path, " is missing: not a backup directory, or a backup that did not finish"));
  }
  absl::StatusOr<std::string> text = PosixFileSystem()->ReadFile(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<BackupManifest> manifest = ParseManifest(*text, path);
  if (!manifest.ok()) return manifest.status();
  for (const ShardBackupInfo& s : manifest->shards) {
    if (!PlainName(s.shard)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": bad shard name '", s.shard, "'"));
    }
  }
  return manifest;
}

// Sends one shard's image (checksums as the manifest has them) to `leader`.
absl::StatusOr<v1::RestoreResponse> RestoreShard(const std::string& dir,
                                                 const ShardBackupInfo& shard,
                                                 const std::string& leader,
                                                 const ClusterBackupOptions& options,
                                                 Progress* progress, const std::string& label) {
  FileSystem* fs = PosixFileSystem();
  auto stub = v1::Admin::NewStub(options.channel(leader));
  auto context = ContextWithin(options.stream_timeout_ms);
  v1::RestoreResponse response;
  std::unique_ptr<grpc::ClientWriter<v1::BackupChunk>> writer =
      stub->Restore(context.get(), &response);
  v1::BackupChunk message;
  v1::BackupHeader* h = message.mutable_header();
  h->set_shard(shard.shard);
  h->set_address(shard.source);
  h->set_role(shard.role);
  h->set_last_index(shard.last_index);
  h->set_last_epoch(shard.last_epoch);
  h->set_snapshot_start_index(shard.snapshot_start_index);
  h->set_created_unix_ms(shard.created_unix_ms);
  h->set_chunk_bytes(shard.chunk_bytes);
  bool open = writer->Write(message);
  uint64_t sent = 0;
  absl::Status failed;
  for (const BackupFileInfo& f : shard.files) {
    if (!open) break;
    const std::string path = JoinPath(JoinPath(dir, shard.shard), f.name);
    absl::StatusOr<std::unique_ptr<SequentialFile>> file = fs->OpenSequential(path);
    if (!file.ok()) {
      failed = file.status();
      break;
    }
    uint64_t offset = 0;
    for (uint32_t checksum : f.chunk_checksums) {
      std::string data;
      while (data.size() < shard.chunk_bytes) {
        std::string more;
        if (failed = (*file)->Read(shard.chunk_bytes - data.size(), &more); !failed.ok()) break;
        if (more.empty()) break;
        data += more;
      }
      if (!failed.ok()) break;
      message.Clear();
      v1::FileChunk* chunk = message.mutable_chunk();
      chunk->set_file(f.name);
      chunk->set_offset(offset);
      chunk->set_checksum(checksum);  // The manifest's: the node checks the bytes against it.
      offset += data.size();
      sent += data.size();
      chunk->set_data(std::move(data));
      if (!(open = writer->Write(message))) break;
      progress->Show(absl::StrCat(label, " ", shard.shard, " to ", leader, ": ", Mib(sent)));
    }
    if (!failed.ok() || !open) break;
    message.Clear();
    message.mutable_file_end()->set_file(f.name);
    message.mutable_file_end()->set_bytes(offset);
    open = writer->Write(message);
  }
  if (failed.ok() && open) {
    message.Clear();
    for (const BackupFileInfo& f : shard.files) message.mutable_end()->add_files(f.name);
    open = writer->Write(message);
  }
  if (!failed.ok()) {
    context->TryCancel();
    (void)writer->Finish();  // The local failure is what matters.
    return failed;
  }
  (void)writer->WritesDone();  // Finish reports what went wrong, if anything.
  grpc::Status status = writer->Finish();
  if (!status.ok()) {
    return FromGrpc(status, absl::StrCat("restore of shard ", shard.shard, " on ", leader));
  }
  return response;
}

// Writes every live key of the image through the router, with the time it
// has left.
absl::Status ReplayShard(const Image& image, const ClusterBackupOptions& options,
                         v1::KeyValue::Stub* router, RestoreSummary* summary, Progress* progress,
                         const std::string& label) {
  v1::MultiSetRequest request;
  auto flush = [&]() -> absl::Status {
    if (request.items_size() == 0) return absl::OkStatus();
    v1::MultiSetResponse response;
    auto context = ContextWithin(options.call_timeout_ms);
    grpc::Status status = router->MultiSet(context.get(), request, &response);
    if (!status.ok()) return FromGrpc(status, "replaying keys through the router");
    for (int i = 0; i < response.results_size(); ++i) {
      const v1::SetResult& r = response.results(i);
      if (r.has_error() && r.error().code() != 0) {
        return absl::Status(
            static_cast<absl::StatusCode>(r.error().code()),
            absl::StrCat("replaying key '", request.items(i).key(), "': ", r.error().message()));
      }
    }
    summary->keys += request.items_size();
    progress->Show(absl::StrCat(label, " replayed ", summary->keys, " keys"));
    request.clear_items();
    return absl::OkStatus();
  };
  for (const auto& [key, entry] : image.keys) {
    uint64_t ttl_ms = 0;
    if (entry.expire_unix_ms != 0) {
      // Converted as late as possible: the expiry lands within the call's latency.
      const int64_t left = entry.expire_unix_ms - absl::ToUnixMillis(absl::Now());
      if (left <= 0) {
        ++summary->expired;
        continue;
      }
      ttl_ms = static_cast<uint64_t>(left);
    }
    v1::SetItem* item = request.add_items();
    item->set_key(key);
    item->set_value(entry.value);
    item->set_ttl_ms(ttl_ms);
    if (static_cast<size_t>(request.items_size()) >= options.replay_batch) {
      if (absl::Status s = flush(); !s.ok()) return s;
    }
  }
  return flush();
}

}  // namespace

absl::StatusOr<v1::ClusterStatusResponse> FetchClusterStatus(const ClusterBackupOptions& options) {
  auto stub = v1::Admin::NewStub(options.channel(options.router));
  auto context = ContextWithin(options.call_timeout_ms);
  v1::ClusterStatusResponse response;
  grpc::Status status = stub->ClusterStatus(context.get(), v1::ClusterStatusRequest(), &response);
  if (!status.ok()) {
    return FromGrpc(status, absl::StrCat("cluster status from ", options.router,
                                         " (--addr must name a kv-router)"));
  }
  return response;
}

absl::StatusOr<BackupManifest> BackupCluster(const std::string& dir,
                                             const ClusterBackupOptions& options) {
  FileSystem* fs = PosixFileSystem();
  if (fs->Exists(dir)) {
    absl::StatusOr<std::vector<std::string>> names = fs->ListDir(dir);
    if (!names.ok()) return names.status();
    if (!names->empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat(dir, " is not empty: a backup goes into a new directory"));
    }
  }
  absl::StatusOr<v1::ClusterStatusResponse> cluster = FetchClusterStatus(options);
  if (!cluster.ok()) return cluster.status();
  if (absl::Status s = fs->CreateDirs(dir); !s.ok()) return s;

  BackupManifest manifest;
  manifest.kvstore_version = KVSTORE_VERSION;
  manifest.created_unix_ms = absl::ToUnixMillis(absl::Now());
  manifest.vnodes = cluster->vnodes();
  Progress progress(options.progress);
  const int shards = cluster->shards_size();
  for (int i = 0; i < shards; ++i) {
    const v1::ShardClusterStatus& shard = cluster->shards(i);
    if (!PlainName(shard.name())) {
      return absl::InvalidArgumentError(
          absl::StrCat("shard name '", shard.name(), "' cannot name a directory"));
    }
    const std::string shard_dir = JoinPath(dir, shard.name());
    if (absl::Status s = fs->CreateDirs(shard_dir); !s.ok()) return s;
    const std::string label = absl::StrCat("[", i + 1, "/", shards, "]");
    const std::string source = BackupSource(shard);
    absl::StatusOr<ShardBackupInfo> info =
        BackupShard(shard, source, shard_dir, options, &progress, label);
    if (!info.ok() && absl::IsAborted(info.status())) {
      // A snapshot pruned the log mid-stream: once more, from scratch.
      for (const std::string& name : fs->ListDir(shard_dir).value_or(std::vector<std::string>{})) {
        (void)fs->Remove(JoinPath(shard_dir, name));  // Overwritten anyway.
      }
      info = BackupShard(shard, source, shard_dir, options, &progress, label);
    }
    if (!info.ok()) return info.status();
    uint64_t bytes = 0;
    for (const BackupFileInfo& f : info->files) bytes += f.bytes;
    progress.Done(absl::StrCat(label, " ", shard.name(), " from ", source, " (", info->role, "): ",
                               info->keys, " keys, index ", info->last_index, ", ", Mib(bytes)));
    manifest.shards.push_back(*std::move(info));
  }
  if (absl::Status s =
          WriteFileAtomically(fs, dir, kBackupTopologyFileName, TopologyYaml(*cluster));
      !s.ok()) {
    return s;
  }
  if (absl::Status s = WriteFileAtomically(fs, dir, kManifestFileName, ManifestToJson(manifest));
      !s.ok()) {
    return s;
  }
  return manifest;
}

absl::StatusOr<std::vector<VerifiedShard>> VerifyBackup(const std::string& dir, FILE* progress) {
  absl::StatusOr<BackupManifest> manifest = ReadManifest(dir);
  if (!manifest.ok()) return manifest.status();
  const std::string topology_path = JoinPath(dir, kBackupTopologyFileName);
  absl::StatusOr<Topology> topology = LoadTopologyFile(topology_path);
  if (!topology.ok()) return topology.status();
  Progress shown(progress);
  std::vector<VerifiedShard> result;
  for (const ShardBackupInfo& shard : manifest->shards) {
    shown.Show(absl::StrCat("verifying ", shard.shard), true);
    VerifiedShard v;
    v.shard = shard.shard;
    for (const BackupFileInfo& f : shard.files) {
      const std::string path = JoinPath(JoinPath(dir, shard.shard), f.name);
      if (absl::Status s = VerifyFileChunks(PosixFileSystem(), path, f.bytes, shard.chunk_bytes,
                                            f.chunk_checksums);
          !s.ok()) {
        return s;
      }
      v.bytes += f.bytes;
    }
    std::string snapshot;
    std::string log;
    ImagePaths(dir, shard, &snapshot, &log);
    if (snapshot.empty()) {
      return absl::DataLossError(absl::StrCat("shard ", shard.shard, " has no snapshot file"));
    }
    absl::StatusOr<Image> image = ReadImage(PosixFileSystem(), snapshot, log);
    if (!image.ok()) return image.status();
    v.keys = LiveKeys(*image, shard.created_unix_ms);
    v.last_index = image->last_index;
    if (v.keys != shard.keys || v.last_index != shard.last_index) {
      return absl::DataLossError(absl::StrCat(
          "shard ", shard.shard, " reads back ", v.keys, " keys to index ", v.last_index,
          "; its manifest says ", shard.keys, " keys to index ", shard.last_index));
    }
    result.push_back(v);
  }
  if (progress != nullptr) std::fprintf(progress, "\r%-78s\r", "");
  return result;
}

absl::StatusOr<RestoreSummary> RestoreCluster(const std::string& dir,
                                              const ClusterBackupOptions& options) {
  // All or nothing: nothing is sent unless every file verifies.
  absl::StatusOr<std::vector<VerifiedShard>> verified = VerifyBackup(dir, options.progress);
  if (!verified.ok()) return verified.status();
  absl::StatusOr<BackupManifest> manifest = ReadManifest(dir);
  if (!manifest.ok()) return manifest.status();
  absl::StatusOr<v1::ClusterStatusResponse> cluster = FetchClusterStatus(options);
  if (!cluster.ok()) return cluster.status();
  std::set<std::string> backup_shards;
  for (const ShardBackupInfo& s : manifest->shards) backup_shards.insert(s.shard);
  std::set<std::string> cluster_shards;
  for (const v1::ShardClusterStatus& s : cluster->shards()) {
    cluster_shards.insert(s.name());
    bool leader_answered = false;
    for (const v1::ClusterNodeStatus& n : s.nodes()) {
      leader_answered |= n.address() == s.leader() && n.has_status() &&
                         n.status().role() == "leader" && n.status().ready();
    }
    if (!leader_answered) {
      return absl::UnavailableError(absl::StrCat("shard ", s.name(), " has no ready leader (",
                                                 s.leader(), "); restore needs every shard up"));
    }
  }
  if (cluster->total_keys() != 0) {
    return absl::FailedPreconditionError(absl::StrCat("the cluster holds ", cluster->total_keys(),
                                                      " keys: restore goes into an empty cluster"));
  }

  RestoreSummary summary;
  summary.shards = manifest->shards.size();
  Progress progress(options.progress);
  if (backup_shards == cluster_shards) {
    for (size_t i = 0; i < manifest->shards.size(); ++i) {
      const ShardBackupInfo& shard = manifest->shards[i];
      std::string leader;
      for (const v1::ShardClusterStatus& s : cluster->shards()) {
        if (s.name() == shard.shard) leader = s.leader();
      }
      const std::string label = absl::StrCat("[", i + 1, "/", manifest->shards.size(), "]");
      absl::StatusOr<v1::RestoreResponse> restored =
          RestoreShard(dir, shard, leader, options, &progress, label);
      if (!restored.ok()) return restored.status();
      summary.keys += restored->keys();
      summary.expired += restored->expired();
      progress.Done(absl::StrCat(label, " ", shard.shard, " installed on ", leader, ": ",
                                 restored->keys(), " keys"));
    }
    return summary;
  }
  summary.replayed = true;
  auto router = v1::KeyValue::NewStub(options.channel(options.router));
  for (size_t i = 0; i < manifest->shards.size(); ++i) {
    const ShardBackupInfo& shard = manifest->shards[i];
    std::string snapshot;
    std::string log;
    ImagePaths(dir, shard, &snapshot, &log);
    absl::StatusOr<Image> image = ReadImage(PosixFileSystem(), snapshot, log);
    if (!image.ok()) return image.status();
    const std::string label =
        absl::StrCat("[", i + 1, "/", manifest->shards.size(), "] ", shard.shard);
    if (absl::Status s = ReplayShard(*image, options, router.get(), &summary, &progress, label);
        !s.ok()) {
      return s;
    }
    progress.Done(absl::StrCat(label, " replayed through ", options.router));
  }
  return summary;
}

}  // namespace kvstore
