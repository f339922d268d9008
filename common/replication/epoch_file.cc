#include "common/replication/epoch_file.h"

#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace kvstore {
namespace {

constexpr char kEpochFile[] = "EPOCH";
constexpr char kNodeIdFile[] = "NODE_ID";

absl::Status WriteAtomically(FileSystem* fs, const std::string& dir, const std::string& name,
                             const std::string& contents) {
  const std::string path = JoinPath(dir, name);
  const std::string tmp = path + ".tmp";
  absl::StatusOr<std::unique_ptr<WritableFile>> file = fs->CreateFile(tmp);
  if (!file.ok()) return file.status();
  absl::Status s = (*file)->Append(contents);
  if (s.ok()) s = (*file)->Sync();
  if (absl::Status c = (*file)->Close(); s.ok()) s = c;
  if (s.ok()) s = fs->Rename(tmp, path);
  if (s.ok()) s = fs->SyncDir(dir);
  return s;
}

}  // namespace

absl::StatusOr<EpochRecord> ReadEpochFile(FileSystem* fs, const std::string& dir) {
  const std::string path = JoinPath(dir, kEpochFile);
  EpochRecord record;
  if (!fs->Exists(path)) return record;
  absl::StatusOr<std::string> contents = fs->ReadFile(path);
  if (!contents.ok()) return contents.status();
  std::vector<absl::string_view> lines = absl::StrSplit(*contents, '\n', absl::SkipEmpty());
  if (lines.empty()) return absl::DataLossError(absl::StrCat(path, " is empty"));
  std::vector<std::string> first =
      absl::StrSplit(absl::StripAsciiWhitespace(lines[0]), absl::MaxSplits(' ', 1));
  if (first.empty() || !absl::SimpleAtoi(first[0], &record.epoch)) {
    return absl::DataLossError(absl::StrCat(path, " does not start with \"<epoch> <leader>\""));
  }
  if (first.size() > 1) record.leader = first[1];
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<std::string> kv =
        absl::StrSplit(absl::StripAsciiWhitespace(lines[i]), absl::MaxSplits(' ', 1));
    const std::string value = kv.size() > 1 ? kv[1] : "";
    if (kv[0] == "leader_id") {
      record.leader_id = value;
    } else if (kv[0] == "followers") {
      record.followers = absl::StrSplit(value, ',', absl::SkipEmpty());
    } else if (kv[0] == "cluster") {
      record.cluster = value;
    } else if (kv[0] == "shard") {
      record.shard = value;
    }  // Unknown keys come from a newer build: ignored.
  }
  return record;
}

absl::Status WriteEpochFile(FileSystem* fs, const std::string& dir, const EpochRecord& record) {
  std::string out = absl::StrCat(record.epoch, " ", record.leader, "\n");
  if (!record.leader_id.empty()) absl::StrAppend(&out, "leader_id ", record.leader_id, "\n");
  if (!record.followers.empty()) {
    absl::StrAppend(&out, "followers ", absl::StrJoin(record.followers, ","), "\n");
  }
  if (!record.cluster.empty()) absl::StrAppend(&out, "cluster ", record.cluster, "\n");
  if (!record.shard.empty()) absl::StrAppend(&out, "shard ", record.shard, "\n");
  return WriteAtomically(fs, dir, kEpochFile, out);
}

absl::StatusOr<std::string> LoadOrCreateNodeId(FileSystem* fs, const std::string& dir) {
  const std::string path = JoinPath(dir, kNodeIdFile);
  if (fs->Exists(path)) {
    absl::StatusOr<std::string> contents = fs->ReadFile(path);
    if (!contents.ok()) return contents.status();
    const std::string id(absl::StripAsciiWhitespace(*contents));
    if (id.empty()) return absl::DataLossError(absl::StrCat(path, " is empty"));
    return id;
  }
  std::random_device entropy;
  const uint64_t bits = (static_cast<uint64_t>(entropy()) << 32) ^ entropy();
  const std::string id = absl::StrFormat("%016x", bits);
  if (absl::Status s = fs->CreateDirs(dir); !s.ok()) return s;
  if (absl::Status s = WriteAtomically(fs, dir, kNodeIdFile, id + "\n"); !s.ok()) return s;
  return id;
}

}  // namespace kvstore
