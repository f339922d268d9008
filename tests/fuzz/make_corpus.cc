// Writes the fuzz targets' seed corpora from our own writers (log segments by
// Wal, snapshots by SnapshotWriter, requests by protobuf), so every seed is a
// file the system really produces:
//   build/bin/fuzz_make_corpus tests/fuzz/corpus
// Each seed starts with the byte its target reads first (the mode or the
// request type); see each fuzz_*.cc for the layout. Rerun it when a format
// changes and commit the result.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/kv/scan_cursor.h"
#include "common/storage/log_format.h"
#include "common/storage/op.h"
#include "common/storage/snapshot.h"
#include "common/storage/wal.h"
#include "glog/logging.h"
#include "kvstore/v1/kv.pb.h"
#include "tests/support/fake_file_system.h"

namespace kvstore::fuzz {
namespace {

std::filesystem::path out_dir;

// A string literal that may hold zero bytes, whole.
template <size_t N>
std::string S(const char (&literal)[N]) {
  return std::string(literal, N - 1);
}
const std::string kModeRaw = S("\x00");

void Write(const std::string& target, const std::string& name, const std::string& bytes) {
  const std::filesystem::path dir = out_dir / target;
  std::filesystem::create_directories(dir);
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  CHECK(out.good()) << "writing " << (dir / name);
}

std::string Op(OpType type, uint64_t version, int64_t expire, absl::string_view key,
               absl::string_view value) {
  OpView op;
  op.type = type;
  op.version = version;
  op.expire_unix_ms = expire;
  op.key = key;
  op.value = value;
  std::string out;
  EncodeOp(op, &out);
  return out;
}

// Records first.. as the store frames them: an epoch record, then ops.
std::string Records(uint64_t first, uint64_t epoch, int ops) {
  std::string out;
  log::AppendRecord(first, epoch, log::RecordType::kEpoch, "127.0.0.1:50061", &out);
  for (int i = 0; i < ops; ++i) {
    const std::string key = absl::StrCat("key-", i);
    const std::string payload =
        i % 3 == 2 ? Op(OpType::kDelete, (epoch << 40) | (first + 1 + i), 0, "key-0", "")
                   : Op(OpType::kPut, (epoch << 40) | (first + 1 + i),
                        i % 2 ? 1'700'000'060'000 : 0, key, absl::StrCat("value-", i));
    log::AppendRecord(first + 1 + i, epoch, log::RecordType::kOp, payload, &out);
  }
  return out;
}

// A segment written by Wal itself.
std::string WalSegment(uint64_t first, const std::string& records, uint64_t last) {
  testing::FakeFileSystem fs;
  absl::StatusOr<std::unique_ptr<Wal>> wal =
      Wal::Open(&fs, "/log", WalOptions{}, 0, [](const WalRecord&) { return absl::OkStatus(); });
  CHECK(wal.ok()) << wal.status();
  if (!records.empty()) {
    CHECK((*wal)->Reset(first).ok());
    CHECK((*wal)->Append(records, first, last).ok());
    CHECK((*wal)->Sync().ok());
  }
  std::vector<std::string> names = *fs.ListDir("/log");
  CHECK_EQ(names.size(), 1u);
  return fs.Contents(JoinPath("/log", names[0]));
}

void LogReaderSeeds() {
  const std::string t = "fuzz_log_reader";
  const std::string three = Records(1, 1, 3);
  const std::string segment = WalSegment(1, three, 4);
  Write(t, "raw-four-records", kModeRaw + segment);
  Write(t, "raw-torn-tail", kModeRaw + segment.substr(0, segment.size() - 5));
  Write(t, "raw-zero-tail", kModeRaw + segment + std::string(40, '\0'));
  Write(t, "raw-two-epochs", kModeRaw + WalSegment(10, Records(10, 2, 2) + Records(13, 3, 1), 14));
  // Mutation mode: first index, count, epoch, then per record a shape byte,
  // version, expiry, key and value (length-prefixed), then offset and flip.
  std::string m = "\x01\x01\x03\x01";
  for (int i = 0; i < 3; ++i) {
    m += static_cast<char>(i == 1 ? 0x80 : 0x00);
    m += std::string(16, static_cast<char>(i + 1));
    m +=
        S("\x03"
          "key"
          "\x05"
          "value");
  }
  Write(t, "mutation-three-records", m + std::string("\x30\x00\x00\x00\x01", 5));
}

void SnapshotSeeds() {
  const std::string t = "fuzz_snapshot_reader";
  testing::FakeFileSystem fs;
  CHECK(fs.CreateDirs("/data").ok());
  auto write = [&](uint64_t start, int entries) {
    absl::StatusOr<std::unique_ptr<SnapshotWriter>> w =
        SnapshotWriter::Create(&fs, "/data", start, 3, 1'700'000'000'000);
    CHECK(w.ok()) << w.status();
    for (int i = 0; i < entries; ++i) {
      CHECK((*w)->Add(absl::StrCat("key-", i), absl::StrCat("value-", i), (3ull << 40) | (i + 1),
                      i % 2 ? 1'700'000'060'000 : 0)
                .ok());
    }
    absl::StatusOr<SnapshotMeta> meta = (*w)->Commit(start + entries);
    CHECK(meta.ok()) << meta.status();
    return fs.Contents(meta->path);
  };
  Write(t, "raw-empty", kModeRaw + write(0, 0));
  Write(t, "raw-five-entries", kModeRaw + write(5, 5));
  // Mutation mode: start, epoch, created, count, entries, end index, offset, flip.
  std::string m = "\x01";
  m += std::string(24, '\x02');
  m += '\x02';
  m += S("\x00\x03"
         "key"
         "\x05"
         "value") +
       std::string(16, '\x01');
  m += S("\x80\x03"
         "big"
         "\x04"
         "data") +
       std::string(16, '\x02');
  m += std::string(8, '\x09') + std::string("\x40\x00\x00\x00\x04", 5);
  Write(t, "mutation-two-entries", m);
  // Chunks mode: the same snapshot, then per chunk an action byte (0: sent
  // as is) and a size byte.
  Write(t, "chunks-two-entries", "\x02" + m.substr(1) + S("\x00\x10\x00\x20\x00\x3f"));
}

std::string Framed(int type, const google::protobuf::MessageLite& message) {
  const std::string bytes = message.SerializeAsString();
  std::string out;
  out += static_cast<char>(type);
  out += static_cast<char>(bytes.size() & 0xff);
  out += static_cast<char>(bytes.size() >> 8);
  return out + bytes;
}

void KvRequestSeeds() {
  const std::string t = "fuzz_kv_request";
  v1::SetRequest set;
  set.set_key("k1");
  set.set_value("v1");
  v1::GetRequest get;
  get.set_key("k1");
  v1::SetRequest cas = set;
  cas.set_if_version(0);
  cas.set_value("v2");
  cas.set_ttl_ms(60'000);
  v1::DeleteRequest del;
  del.set_key("k1");
  v1::MultiSetRequest mset;
  for (int i = 0; i < 3; ++i) {
    v1::SetItem* item = mset.add_items();
    item->set_key(absl::StrCat("m", i));
    item->set_value(absl::StrCat("value-", i));
  }
  mset.mutable_ack()->set_mode(v1::ACK_MODE_LEADER_FSYNC);
  v1::MultiGetRequest mget;
  mget.add_keys("m0");
  mget.add_keys("m2");
  mget.set_read_mode(v1::READ_MODE_ANY_REPLICA);
  v1::ScanRequest scan;
  scan.set_prefix("m");
  scan.set_limit(2);
  v1::ScanRequest next = scan;
  next.set_cursor(EncodeNodeCursor(NodeScanCursor{1ull << 63, std::string("m1")}));
  Write(t, "set-get-delete", Framed(1, set) + Framed(0, get) + Framed(2, del) + Framed(0, get));
  Write(t, "cas", Framed(1, cas) + Framed(1, cas) + Framed(0, get));
  Write(t, "multi", Framed(4, mset) + Framed(3, mget) + Framed(5, scan) + Framed(5, next));
  v1::SetRequest too_long = set;
  too_long.set_key(std::string(17, 'k'));
  v1::SetRequest empty = set;
  empty.clear_key();
  Write(t, "refused", Framed(1, too_long) + Framed(1, empty));
}

void ReplicationSeeds() {
  const std::string t = "fuzz_replication_batch";
  // Epoch 1, an own log of 2 records (shape, version, expiry, key, value
  // each), then pushes: a built batch that runs on, and raw framed records.
  std::string in = S("\x00\x02");
  for (int i = 0; i < 2; ++i) {
    in += '\x00';
    in += std::string(8, static_cast<char>(i + 1));
    in += '\x00';
    in += S("\x00"
            "a"
            "\x02"
            "v") +
          std::to_string(i);
  }
  std::string push = S("\x02\x04\x00");  // Built, on the follower's epoch, from last + 1.
  push += '\x00';
  push += std::string(8, '\x07');
  push += '\x00';
  push +=
      S("\x00"
        "b"
        "\x02"
        "vb");
  const std::string raw = Records(4, 2, 2);
  std::string raw_push = "\x01";
  raw_push += static_cast<char>(raw.size() & 0xff);
  raw_push += static_cast<char>(raw.size() >> 8);
  Write(t, "own-log-then-pushes", in + push + raw_push + raw);
  Write(t, "resend", in + S("\x02\x02\x01") + in.substr(2));
}

void ConfigSeeds() {
  const std::string t = "fuzz_config";
  Write(t, "topology",
        S("\x00"
          "vnodes: 256\n"
          "shards:\n"
          "  - name: shard-0\n"
          "    leader: 127.0.0.1:50061\n"
          "    replicas: [127.0.0.1:50071, 127.0.0.1:50072]\n"
          "  - name: shard-1\n"
          "    leader: \"[::1]:50062\"\n"
          "    replicas: []\n"));
  Write(t, "flags",
        "\x01"
        "fuzz-name: shard-0\n"
        "fuzz_count: 3\n"
        "fuzz-enabled: true\n"
        "fuzz-limit-bytes: 1048576\n"
        "fuzz_ratio: 0.25\n");
}

}  // namespace
}  // namespace kvstore::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR (tests/fuzz/corpus)\n", argv[0]);
    return 2;
  }
  FLAGS_logtostderr = true;
  kvstore::fuzz::out_dir = argv[1];
  kvstore::fuzz::LogReaderSeeds();
  kvstore::fuzz::SnapshotSeeds();
  kvstore::fuzz::KvRequestSeeds();
  kvstore::fuzz::ReplicationSeeds();
  kvstore::fuzz::ConfigSeeds();
  return 0;
}
