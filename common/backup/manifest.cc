#include "common/backup/manifest.h"

#include <exception>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace kvstore {

uint64_t BackupManifest::TotalKeys() const {
  uint64_t total = 0;
  for (const ShardBackupInfo& s : shards) total += s.keys;
  return total;
}

uint64_t BackupManifest::TotalBytes() const {
  uint64_t total = 0;
  for (const ShardBackupInfo& s : shards) {
    for (const BackupFileInfo& f : s.files) total += f.bytes;
  }
  return total;
}

std::string ManifestToJson(const BackupManifest& manifest) {
  nlohmann::ordered_json root;
  root["format_version"] = manifest.format_version;
  root["kvstore_version"] = manifest.kvstore_version;
  root["created_unix_ms"] = manifest.created_unix_ms;
  root["vnodes"] = manifest.vnodes;
  root["total_keys"] = manifest.TotalKeys();
  root["total_bytes"] = manifest.TotalBytes();
  nlohmann::ordered_json shards = nlohmann::ordered_json::array();
  for (const ShardBackupInfo& s : manifest.shards) {
    nlohmann::ordered_json shard;
    shard["shard"] = s.shard;
    shard["source"] = s.source;
    shard["role"] = s.role;
    shard["last_index"] = s.last_index;
    shard["last_epoch"] = s.last_epoch;
    shard["snapshot_start_index"] = s.snapshot_start_index;
    shard["created_unix_ms"] = s.created_unix_ms;
    shard["keys"] = s.keys;
    shard["chunk_bytes"] = s.chunk_bytes;
    nlohmann::ordered_json files = nlohmann::ordered_json::array();
    for (const BackupFileInfo& f : s.files) {
      nlohmann::ordered_json file;
      file["name"] = f.name;
      file["bytes"] = f.bytes;
      file["chunk_checksums"] = f.chunk_checksums;
      files.push_back(std::move(file));
    }
    shard["files"] = std::move(files);
    shards.push_back(std::move(shard));
  }
  root["shards"] = std::move(shards);
  return root.dump(2) + "\n";
}

absl::StatusOr<BackupManifest> ParseManifest(absl::string_view json, const std::string& source) {
  BackupManifest manifest;
  try {
    const nlohmann::json root = nlohmann::json::parse(json.begin(), json.end());
    manifest.format_version = root.at("format_version").get<int>();
    if (manifest.format_version != kBackupFormatVersion) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": backup format version ",
                                                     manifest.format_version, ", this kvctl reads ",
                                                     kBackupFormatVersion));
    }
    manifest.kvstore_version = root.value("kvstore_version", "");
    manifest.created_unix_ms = root.at("created_unix_ms").get<int64_t>();
    manifest.vnodes = root.at("vnodes").get<uint32_t>();
    for (const nlohmann::json& s : root.at("shards")) {
      ShardBackupInfo shard;
      shard.shard = s.at("shard").get<std::string>();
      shard.source = s.value("source", "");
      shard.role = s.value("role", "");
      shard.last_index = s.at("last_index").get<uint64_t>();
      shard.last_epoch = s.at("last_epoch").get<uint64_t>();
      shard.snapshot_start_index = s.at("snapshot_start_index").get<uint64_t>();
      shard.created_unix_ms = s.at("created_unix_ms").get<int64_t>();
      shard.keys = s.at("keys").get<uint64_t>();
      shard.chunk_bytes = s.at("chunk_bytes").get<uint32_t>();
      for (const nlohmann::json& f : s.at("files")) {
        BackupFileInfo file;
        file.name = f.at("name").get<std::string>();
        if (file.name.empty() || file.name.find('/') != std::string::npos || file.name[0] == '.') {
          return absl::InvalidArgumentError(
              absl::StrCat(source, ": file name '", file.name, "' is not a plain file name"));
        }
        file.bytes = f.at("bytes").get<uint64_t>();
        file.chunk_checksums = f.at("chunk_checksums").get<std::vector<uint32_t>>();
        shard.files.push_back(std::move(file));
      }
      if (shard.files.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ": shard ", shard.shard, " lists no files"));
      }
      manifest.shards.push_back(std::move(shard));
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, " is not a backup manifest: ", e.what()));
  }
  return manifest;
}

}  // namespace kvstore
