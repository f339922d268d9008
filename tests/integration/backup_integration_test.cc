// Backup, verify and restore against real binaries on 127.0.0.1: shards with
// replicas behind a kv-router, kvctl as a user runs it. Invariants:
//  - backup -> new empty cluster with the same shards -> restore: every key,
//    value and expiry is identical (read back with scans through the router),
//    the replicas follow, and new writes get versions above the restored ones;
//  - into a cluster with another shard count, every key and value arrives
//    through the router and each expiry is kept to within the replay's latency;
//  - a damaged backup file is refused, by kvctl and by a node, naming the file,
//    and nothing is restored;
//  - verify counts the keys the backup holds.
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/backup/backup_image.h"
#include "common/backup/manifest.h"
#include "common/topology/topology.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/v1/admin.grpc.pb.h"
#include "kvstore/v1/kv.grpc.pb.h"
#include "tests/support/process.h"
#include "tests/support/router_process.h"

namespace kvstore {
namespace {

using ::kvstore::testing::AwaitSameLastIndex;
using ::kvstore::testing::KvClient;
using ::kvstore::testing::KvctlResult;
using ::kvstore::testing::ReadFileOrEmpty;
using ::kvstore::testing::RouterProcess;
using ::kvstore::testing::RunKvctl;
using ::kvstore::testing::ShardGroup;
using ::kvstore::testing::TempDir;
using ::kvstore::testing::WriteTopologyFile;
using ::testing::HasSubstr;

std::string Key(int i) { return absl::StrFormat("key:%06d", i); }

// A cluster of `shards` shards (shard-0...), each a leader with `replicas`
// replicas, behind one router.
class Cluster {
 public:
  Cluster(const std::string& dir, int shards, int replicas) : dir_(dir) {
    for (int i = 0; i < shards; ++i) {
      groups_.push_back(std::make_unique<ShardGroup>(absl::StrCat(dir, "/shard-", i), KV_SHARD_BIN,
                                                     KV_REPLICA_BIN, replicas));
    }
  }

  absl::Status Start() {
    Topology topology;
    for (size_t i = 0; i < groups_.size(); ++i) {
      const std::vector<std::string> flags = {"--fsync=no", absl::StrCat("--shard=shard-", i)};
      if (absl::Status s = groups_[i]->Start(flags, flags); !s.ok()) return s;
      ShardTopology shard;
      shard.name = absl::StrCat("shard-", i);
      shard.leader = groups_[i]->leader().address();
      shard.replicas = groups_[i]->follower_addresses();
      topology.shards.push_back(shard);
    }
    const std::string path = dir_ + "/topology.yaml";
    if (absl::Status s = WriteTopologyFile(path, topology); !s.ok()) return s;
    router_ = std::make_unique<RouterProcess>(dir_ + "/router");
    if (absl::Status s = router_->Start(path); !s.ok()) return s;
    client_ = std::make_unique<KvClient>(router_->address(), absl::Seconds(30));
    return absl::OkStatus();
  }

  // Every replica holds what its leader holds.
  absl::Status AwaitReplicas() {
    for (auto& g : groups_) {
      for (int r = 0; r < g->replica_count(); ++r) {
        if (absl::Status s = AwaitSameLastIndex(g->leader().address(), g->replica(r).address(),
                                                absl::Now() + absl::Seconds(20));
            !s.ok()) {
          return s;
        }
      }
    }
    return absl::OkStatus();
  }

  std::string LogTails() const {
    std::string out;
    for (const auto& g : groups_) absl::StrAppend(&out, g->LogTails(1500), "\n");
    if (router_) absl::StrAppend(&out, "--- router:\n", router_->LogTail(1500));
    return out;
  }

  const std::string& router() const { return router_->address(); }
  KvClient& client() { return *client_; }
  ShardGroup& group(int i) { return *groups_.at(static_cast<size_t>(i)); }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<ShardGroup>> groups_;
  std::unique_ptr<RouterProcess> router_;
  std::unique_ptr<KvClient> client_;
};

struct Stored {
  std::string value;
  uint64_t version = 0;
  uint64_t expires_at_ms = 0;
};

// Everything the cluster holds, by a scan through the router.
std::map<std::string, Stored> ReadEverything(KvClient& client) {
  std::map<std::string, Stored> out;
  v1::ScanRequest request;
  request.set_limit(1000);
  for (int pages = 0; pages < 10'000; ++pages) {
    v1::ScanResponse page;
    grpc::Status s = client.kv()->Scan(client.NewContext().get(), request, &page);
    EXPECT_TRUE(s.ok()) << s.error_message();
    if (!s.ok()) break;
    for (const v1::ScanEntry& e : page.entries()) {
      out[e.key()] = Stored{e.value(), e.version(), e.expires_at_ms()};
    }
    if (page.next_cursor().empty()) break;
    request.set_cursor(page.next_cursor());
  }
  return out;
}

// Writes keys [from, to): value "v<i>:" padded, every third with an hour to live.
void WriteKeys(KvClient& client, int from, int to, const std::string& tag) {
  for (int start = from; start < to; start += 500) {
    v1::MultiSetRequest request;
    for (int i = start; i < std::min(to, start + 500); ++i) {
      v1::SetItem* item = request.add_items();
      item->set_key(Key(i));
      item->set_value(absl::StrCat(tag, i, std::string(static_cast<size_t>(i % 50), 'x')));
      if (i % 3 == 0) item->set_ttl_ms(3'600'000);
    }
    v1::MultiSetResponse response;
    grpc::Status s = client.MultiSet(request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    for (const v1::SetResult& r : response.results()) ASSERT_EQ(r.error().code(), 0);
  }
}

class BackupIntegrationTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (HasFailure()) {
      for (Cluster* c : clusters_) std::printf("%s\n", c->LogTails().c_str());
    }
  }
  Cluster* NewCluster(const std::string& name, int shards, int replicas) {
    owned_.push_back(std::make_unique<Cluster>(tmp_.Join(name), shards, replicas));
    clusters_.push_back(owned_.back().get());
    return owned_.back().get();
  }
  // kvctl with a long enough deadline for a whole backup or restore.
  KvctlResult Kvctl(const std::string& addr, const std::vector<std::string>& args) {
    return RunKvctl(addr, args, absl::Seconds(60));
  }

  TempDir tmp_;  // First: removed last.
  std::vector<std::unique_ptr<Cluster>> owned_;
  std::vector<Cluster*> clusters_;
};

// The image holds a snapshot and the log after it: keys written, a snapshot
// taken on every node, then more keys written and some deleted.
void FillWithSnapshotAndLog(Cluster& cluster, int shards) {
  WriteKeys(cluster.client(), 0, 2000, "a");
  ASSERT_TRUE(cluster.AwaitReplicas().ok());
  for (int i = 0; i < shards; ++i) {
    std::vector<std::string> nodes = {cluster.group(i).leader().address()};
    for (int r = 0; r < cluster.group(i).replica_count(); ++r) {
      nodes.push_back(cluster.group(i).replica(r).address());
    }
    for (const std::string& node : nodes) {
      KvClient admin(node);
      v1::SnapshotResponse snapshot;
      ASSERT_TRUE(admin.Snapshot(&snapshot).ok()) << node;
    }
  }
  WriteKeys(cluster.client(), 1500, 3000, "b");  // Overwrites 500, adds 1000.
  for (int i = 0; i < 3000; i += 7) {
    v1::DeleteResponse deleted;
    ASSERT_TRUE(cluster.client().Delete(Key(i), &deleted).ok());
  }
  ASSERT_TRUE(cluster.AwaitReplicas().ok());
}

TEST_F(BackupIntegrationTest, BackupWipeRestoreKeepsEveryKeyValueAndExpiry) {
  Cluster* source = NewCluster("source", 3, 1);
  ASSERT_TRUE(source->Start().ok()) << source->LogTails();
  ASSERT_NO_FATAL_FAILURE(FillWithSnapshotAndLog(*source, 3));
  const std::map<std::string, Stored> before = ReadEverything(source->client());
  ASSERT_EQ(before.size(), 3000u - 429u);  // 429 multiples of 7 below 3000.

  const std::string dir = tmp_.Join("backup");
  KvctlResult backup = Kvctl(source->router(), {"backup", dir});
  ASSERT_EQ(backup.exit_code, 0) << backup.ToString();
  EXPECT_THAT(backup.out, HasSubstr(absl::StrCat("3 shards, ", before.size(), " keys")));
  absl::StatusOr<BackupManifest> manifest =
      ParseManifest(ReadFileOrEmpty(dir + "/manifest.json"), "manifest.json");
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  ASSERT_EQ(manifest->shards.size(), 3u);
  EXPECT_EQ(manifest->TotalKeys(), before.size());
  for (const ShardBackupInfo& s : manifest->shards) {
    EXPECT_EQ(s.role, "replica") << s.shard << ": caught-up replicas are the sources";
    ASSERT_EQ(s.files.size(), 2u) << s.shard << ": a snapshot and the log after it";
    EXPECT_TRUE(absl::StartsWith(s.files[1].name, "wal-"));
  }

  KvctlResult verify = Kvctl("", {"backup", "verify", dir});
  ASSERT_EQ(verify.exit_code, 0) << verify.ToString();
  EXPECT_THAT(verify.out, HasSubstr(absl::StrCat("3 shards, ", before.size(), " keys")));

  // The "wiped" cluster: new nodes, new directories, the same shard names.
  Cluster* target = NewCluster("target", 3, 1);
  ASSERT_TRUE(target->Start().ok()) << target->LogTails();
  KvctlResult restore = Kvctl(target->router(), {"restore", dir});
  ASSERT_EQ(restore.exit_code, 0) << restore.ToString();
  EXPECT_THAT(restore.out, HasSubstr("installed per shard"));

  const std::map<std::string, Stored> after = ReadEverything(target->client());
  ASSERT_EQ(after.size(), before.size());
  size_t checked = 0;
  size_t with_expiry = 0;
  uint64_t highest_version = 0;
  for (const auto& [key, was] : before) {
    auto it = after.find(key);
    ASSERT_NE(it, after.end()) << key << " was not restored";
    EXPECT_EQ(it->second.value, was.value) << key;
    EXPECT_EQ(it->second.expires_at_ms, was.expires_at_ms) << key;
    with_expiry += was.expires_at_ms != 0 ? 1 : 0;
    highest_version = std::max(highest_version, it->second.version);
    ++checked;
  }
  EXPECT_GT(with_expiry, 500u);
  std::printf("checked %zu keys (%zu with an expiry): values and expiries identical\n", checked,
              with_expiry);

  // The replicas follow the restored leaders, and the shards take writes
  // whose versions are above every restored one.
  ASSERT_TRUE(target->AwaitReplicas().ok()) << target->LogTails();
  for (int i = 0; i < 3; ++i) {
    v1::StatusResponse replica;
    ASSERT_TRUE(KvClient(target->group(i).replica(0).address()).Status(&replica).ok());
    v1::StatusResponse leader;
    ASSERT_TRUE(KvClient(target->group(i).leader().address()).Status(&leader).ok());
    EXPECT_EQ(replica.key_count(), leader.key_count()) << "shard-" << i;
  }
  v1::SetResponse set;
  ASSERT_TRUE(target->client().Set(before.begin()->first, "new", &set).ok());
  EXPECT_GT(set.version(), after.at(before.begin()->first).version);

  // A second restore finds the cluster no longer empty.
  KvctlResult again = Kvctl(target->router(), {"restore", dir});
  EXPECT_EQ(again.exit_code, 3) << again.ToString();
  EXPECT_THAT(again.err, HasSubstr("empty cluster"));
}

TEST_F(BackupIntegrationTest, RestoreIntoFourShardsFromAThreeShardBackup) {
  Cluster* source = NewCluster("source", 3, 0);
  ASSERT_TRUE(source->Start().ok()) << source->LogTails();
  ASSERT_NO_FATAL_FAILURE(FillWithSnapshotAndLog(*source, 3));
  const std::map<std::string, Stored> before = ReadEverything(source->client());
  const std::string dir = tmp_.Join("backup");
  KvctlResult backup = Kvctl(source->router(), {"--fresh", "backup", dir});
  ASSERT_EQ(backup.exit_code, 0) << backup.ToString();

  Cluster* target = NewCluster("four", 4, 0);
  ASSERT_TRUE(target->Start().ok()) << target->LogTails();
  KvctlResult restore = Kvctl(target->router(), {"restore", dir});
  ASSERT_EQ(restore.exit_code, 0) << restore.ToString();
  EXPECT_THAT(restore.out, HasSubstr("replayed through the router"));

  const std::map<std::string, Stored> after = ReadEverything(target->client());
  ASSERT_EQ(after.size(), before.size());
  int64_t worst_drift_ms = 0;
  for (const auto& [key, was] : before) {
    auto it = after.find(key);
    ASSERT_NE(it, after.end()) << key << " was not restored";
    EXPECT_EQ(it->second.value, was.value) << key;
    ASSERT_EQ(it->second.expires_at_ms == 0, was.expires_at_ms == 0) << key;
    const int64_t drift = static_cast<int64_t>(it->second.expires_at_ms) -
                          static_cast<int64_t>(was.expires_at_ms);
    worst_drift_ms = std::max(worst_drift_ms, drift < 0 ? -drift : drift);
  }
  // The expiry travels as the time left, converted just before each batch.
  EXPECT_LE(worst_drift_ms, 5000);
  std::printf("replayed %zu keys into 4 shards; largest expiry drift %lld ms\n", after.size(),
              static_cast<long long>(worst_drift_ms));
  for (int i = 0; i < 4; ++i) {
    v1::StatusResponse leader;
    ASSERT_TRUE(KvClient(target->group(i).leader().address()).Status(&leader).ok());
    EXPECT_GT(leader.key_count(), 300u) << "shard-" << i << " got too few of the keys";
  }
}

// Flips one byte at `offset` of the file at `path`.
void FlipByte(const std::string& path, long offset) {
  FILE* f = std::fopen(path.c_str(), "r+b");
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(std::fseek(f, offset, SEEK_SET), 0);
  const int c = std::fgetc(f);
  ASSERT_NE(c, EOF);
  ASSERT_EQ(std::fseek(f, offset, SEEK_SET), 0);
  std::fputc(c ^ 0x40, f);
  std::fclose(f);
}

TEST_F(BackupIntegrationTest, ACorruptedBackupChunkIsRefusedNamingTheFile) {
  Cluster* source = NewCluster("source", 2, 0);
  ASSERT_TRUE(source->Start().ok()) << source->LogTails();
  ASSERT_NO_FATAL_FAILURE(WriteKeys(source->client(), 0, 1500, "a"));
  const std::string dir = tmp_.Join("backup");
  KvctlResult backup = Kvctl(source->router(), {"backup", dir});
  ASSERT_EQ(backup.exit_code, 0) << backup.ToString();
  absl::StatusOr<BackupManifest> manifest =
      ParseManifest(ReadFileOrEmpty(dir + "/manifest.json"), "manifest.json");
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  const ShardBackupInfo& shard = manifest->shards[1];
  const std::string damaged = absl::StrCat(dir, "/", shard.shard, "/", shard.files[0].name);

  // Keep a good copy of what the node is sent, then damage the file.
  const std::string good = ReadFileOrEmpty(damaged);
  ASSERT_GT(good.size(), 100u);
  ASSERT_NO_FATAL_FAILURE(FlipByte(damaged, static_cast<long>(good.size() / 2)));

  KvctlResult verify = Kvctl("", {"backup", "verify", dir});
  EXPECT_EQ(verify.exit_code, 5) << verify.ToString();
  EXPECT_THAT(verify.err, HasSubstr(damaged));
  EXPECT_THAT(verify.err, HasSubstr("DATA_LOSS"));

  Cluster* target = NewCluster("target", 2, 0);
  ASSERT_TRUE(target->Start().ok()) << target->LogTails();
  KvctlResult restore = Kvctl(target->router(), {"restore", dir});
  EXPECT_EQ(restore.exit_code, 5) << restore.ToString();
  EXPECT_THAT(restore.err, HasSubstr(damaged));
  EXPECT_TRUE(ReadEverything(target->client()).empty()) << "nothing may be restored";

  // A node checks each chunk against the checksum it is sent, too: one
  // damaged in transit is refused, naming the file, and nothing is installed.
  KvClient node(target->group(1).leader().address(), absl::Seconds(20));
  v1::RestoreResponse response;
  auto context = node.NewContext();
  auto writer = node.admin()->Restore(context.get(), &response);
  v1::BackupChunk message;
  v1::BackupHeader* header = message.mutable_header();
  header->set_shard(shard.shard);
  header->set_last_index(shard.last_index);
  header->set_chunk_bytes(shard.chunk_bytes);
  ASSERT_TRUE(writer->Write(message));
  message.Clear();
  v1::FileChunk* chunk = message.mutable_chunk();
  chunk->set_file(shard.files[0].name);
  chunk->set_offset(0);
  chunk->set_data(good);
  chunk->set_checksum(BackupChunkChecksum(good) ^ 1);
  writer->Write(message);  // The node may already have refused it.
  writer->WritesDone();
  grpc::Status refused = writer->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::DATA_LOSS) << refused.error_message();
  EXPECT_THAT(refused.error_message(), HasSubstr(shard.files[0].name));
  v1::StatusResponse status;
  ASSERT_TRUE(node.Status(&status).ok());
  EXPECT_EQ(status.key_count(), 0u);
}

TEST_F(BackupIntegrationTest, ClusterStatusShowsEveryShardAndCountsLeadersOnly) {
  Cluster* cluster = NewCluster("cluster", 2, 1);
  ASSERT_TRUE(cluster->Start().ok()) << cluster->LogTails();
  ASSERT_NO_FATAL_FAILURE(WriteKeys(cluster->client(), 0, 1000, "a"));
  ASSERT_TRUE(cluster->AwaitReplicas().ok());
  v1::ClusterStatusResponse status;
  grpc::Status s = cluster->client().admin()->ClusterStatus(
      cluster->client().NewContext().get(), v1::ClusterStatusRequest(), &status);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(status.shards_size(), 2);
  EXPECT_EQ(status.total_keys(), 1000u) << "replicas must not be counted";
  EXPECT_EQ(status.nodes(), 4u);
  EXPECT_EQ(status.nodes_down(), 0u);
  for (const v1::ShardClusterStatus& shard : status.shards()) {
    ASSERT_EQ(shard.nodes_size(), 2) << shard.name();
    EXPECT_EQ(shard.nodes(0).status().role(), "leader");
    EXPECT_EQ(shard.nodes(1).status().role(), "replica");
    EXPECT_EQ(shard.max_lag_entries(), 0u);
  }

  KvctlResult text = Kvctl(cluster->router(), {"status"});
  ASSERT_EQ(text.exit_code, 0) << text.ToString();
  EXPECT_THAT(text.out, HasSubstr("cluster:      2 shards, 4 nodes (0 down), 1000 keys"));
  EXPECT_THAT(text.out, HasSubstr("shard shard-1"));
  KvctlResult json = Kvctl(cluster->router(), {"--output=json", "status"});
  ASSERT_EQ(json.exit_code, 0) << json.ToString();
  EXPECT_THAT(json.out, HasSubstr("\"totalKeys\":\"1000\""));

  // A replica that is down shows as down, and the totals still count the leaders.
  ASSERT_TRUE(cluster->group(0).replica(0).Terminate().ok());
  s = cluster->client().admin()->ClusterStatus(cluster->client().NewContext().get(),
                                               v1::ClusterStatusRequest(), &status);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(status.nodes_down(), 1u);
  EXPECT_EQ(status.total_keys(), 1000u);
}

// kvctl with no command and stdin not a terminal reads one command per line
// (mass insert) and prints one result per line; the address comes from
// KVCTL_ADDR, and a flag on the command line wins over the environment.
TEST_F(BackupIntegrationTest, KvctlReadsCommandsFromStdinWithItsAddressFromTheEnvironment) {
  Cluster* cluster = NewCluster("cluster", 2, 0);
  ASSERT_TRUE(cluster->Start().ok()) << cluster->LogTails();
  std::string commands = "# a comment, then 200 writes\n";
  for (int i = 0; i < 200; ++i) absl::StrAppend(&commands, "set ", Key(i), " 'value ", i, "'\n");
  absl::StrAppend(&commands, "get ", Key(7), "\nset short-lived x --ttl_ms=60000\nttl short-lived\n",
                  "get missing\ndbsize\n");
  const std::string input = tmp_.Join("commands.txt");
  FILE* f = std::fopen(input.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs(commands.c_str(), f);
  std::fclose(f);

  const std::string out = tmp_.Join("session.out");
  const std::string err = tmp_.Join("session.err");
  ::kvstore::testing::ChildProcess shell;
  // The wrong address on the command line's environment is overridden by no
  // flag here, so KVCTL_ADDR must be the one used.
  ASSERT_TRUE(shell
                  .Start("/bin/sh",
                         {"-c", absl::StrCat("KVCTL_ADDR=", cluster->router(), " exec ", KVCTL_BIN,
                                             " < ", input)},
                         out, err)
                  .ok());
  absl::StatusOr<::kvstore::testing::ExitStatus> exited =
      shell.WaitExit(absl::Now() + absl::Seconds(60));
  ASSERT_TRUE(exited.ok());
  EXPECT_EQ(exited->code, 1) << "the highest exit code of the lines: 'get missing'";
  const std::vector<std::string> lines =
      absl::StrSplit(ReadFileOrEmpty(out), '\n', absl::SkipEmpty());
  // One line per command; "get missing" answers on stderr only.
  ASSERT_EQ(lines.size(), 200u + 4u) << ReadFileOrEmpty(out) << ReadFileOrEmpty(err);
  EXPECT_TRUE(absl::StartsWith(lines[0], "OK version="));
  EXPECT_EQ(lines[200], "value 7");
  EXPECT_EQ(lines[202], "60");
  EXPECT_EQ(lines[203], "201");
  EXPECT_THAT(ReadFileOrEmpty(err), HasSubstr("NOT_FOUND: key 'missing'"));

  // The command line wins over the environment.
  ::kvstore::testing::ChildProcess direct;
  ASSERT_TRUE(direct
                  .Start("/bin/sh",
                         {"-c", absl::StrCat("KVCTL_ADDR=127.0.0.1:1 exec ", KVCTL_BIN,
                                             " --addr=", cluster->router(), " get ", Key(3))},
                         out, err)
                  .ok());
  exited = direct.WaitExit(absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(exited.ok());
  EXPECT_EQ(exited->code, 0) << ReadFileOrEmpty(err);
  EXPECT_EQ(ReadFileOrEmpty(out), "value 3\n");
}

}  // namespace
}  // namespace kvstore
