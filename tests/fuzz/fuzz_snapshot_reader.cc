// fuzz_snapshot_reader: the snapshot reader (LoadSnapshot, VerifySnapshot in
// common/storage/snapshot.h) and the follower's receiver of snapshot transfers
// (common/replication/snapshot_receiver.h). The first input byte picks the
// mode (modulo 3):
//
//  0 "raw": the rest is a snapshot file. Loading never crashes or reads out of
//    bounds; it succeeds only for a whole file (every byte accounted for, the
//    trailer's count equal to the entries handed over) and otherwise fails with
//    DATA_LOSS naming the file. What it loads, written again by SnapshotWriter,
//    loads back the same.
//
//  1 "mutation": the rest describes entries, which SnapshotWriter writes; one
//    byte of the file is changed. Loading fails with DATA_LOSS (every byte of a
//    snapshot is covered by a check), and the entries handed over before it
//    are the first ones written, unchanged: never a different entry.
//
//  2 "chunks": a snapshot written as in mode 1 is sent to a SnapshotReceiver
//    in fuzzed chunks, some damaged on the way (refused with DATA_LOSS), some
//    tampered with behind a matching checksum, lost or cut short. An untouched
//    transfer arrives byte for byte; whatever arrives verifies as a snapshot
//    only if it is the leader's file: a follower never installs another.
#include <xxhash.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/replication/snapshot_receiver.h"
#include "common/storage/snapshot.h"
#include "glog/logging.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/support/fake_file_system.h"

namespace kvstore::fuzz {
namespace {

constexpr char kDir[] = "/data";

struct Entry {
  std::string key;
  std::string value;
  uint64_t version = 0;
  int64_t expire_unix_ms = 0;

  bool operator==(const Entry& o) const {
    return key == o.key && value == o.value && version == o.version &&
           expire_unix_ms == o.expire_unix_ms;
  }
};

struct Loaded {
  absl::StatusOr<SnapshotMeta> meta;
  std::vector<Entry> entries;
};

Loaded Load(testing::FakeFileSystem* fs, const std::string& path) {
  Loaded out;
  out.meta = LoadSnapshot(
      fs, path,
      [&](absl::string_view key, absl::string_view value, uint64_t version,
          int64_t expire_unix_ms) {
        out.entries.push_back(Entry{std::string(key), std::string(value), version, expire_unix_ms});
        return absl::OkStatus();
      });
  return out;
}

void CheckRefused(const Loaded& loaded, const std::string& path) {
  CHECK(absl::IsDataLoss(loaded.meta.status())) << loaded.meta.status();
  CHECK(absl::StrContains(loaded.meta.status().message(), path)) << loaded.meta.status();
}

void RawMode(absl::string_view file) {
  testing::FakeFileSystem fs;
  CHECK(fs.CreateDirs(kDir).ok());
  const std::string path = JoinPath(kDir, SnapshotFileName(7));
  fs.SetContents(path, std::string(file));
  const Loaded loaded = Load(&fs, path);
  if (!loaded.meta.ok()) {
    CheckRefused(loaded, path);
    return;
  }
  CHECK_EQ(loaded.meta->bytes, file.size()) << "a snapshot loaded without reading all of it";
  CHECK_EQ(loaded.meta->entries, loaded.entries.size());
  absl::StatusOr<SnapshotMeta> verified = VerifySnapshot(&fs, path);
  CHECK(verified.ok()) << "loads but does not verify: " << verified.status();

  // Written again by our writer, it loads back the same.
  absl::StatusOr<std::unique_ptr<SnapshotWriter>> writer =
      SnapshotWriter::Create(&fs, kDir, 9, loaded.meta->epoch, loaded.meta->created_unix_ms);
  CHECK(writer.ok()) << writer.status();
  for (const Entry& e : loaded.entries) {
    CHECK((*writer)->Add(e.key, e.value, e.version, e.expire_unix_ms).ok());
  }
  absl::StatusOr<SnapshotMeta> committed = (*writer)->Commit(loaded.meta->end_index);
  CHECK(committed.ok()) << committed.status();
  const Loaded again = Load(&fs, committed->path);
  CHECK(again.meta.ok()) << again.meta.status();
  CHECK(again.entries == loaded.entries) << "a rewritten snapshot loads different entries";
  CHECK_EQ(again.meta->epoch, loaded.meta->epoch);
  CHECK_EQ(again.meta->end_index, loaded.meta->end_index);
  CHECK_EQ(again.meta->created_unix_ms, loaded.meta->created_unix_ms);
}

// Writes a snapshot of fuzzed entries with SnapshotWriter; returns its path.
std::string WriteSnapshot(InputReader& in, testing::FakeFileSystem* fs,
                          std::vector<Entry>* written) {
  const uint64_t start_index = in.U64();
  const uint64_t epoch = in.U64();
  const int64_t created = static_cast<int64_t>(in.U64());
  absl::StatusOr<std::unique_ptr<SnapshotWriter>> writer =
      SnapshotWriter::Create(fs, kDir, start_index, epoch, created);
  CHECK(writer.ok()) << writer.status();
  const int count = in.U8() % 16;
  for (int i = 0; i < count; ++i) {
    const uint8_t shape = in.U8();
    Entry e;
    e.key = std::string(in.ShortBytes());
    e.value = std::string(in.ShortBytes());
    // Large values make several blocks (a block is written at 64 KiB).
    if ((shape & 0x80) && !e.value.empty()) {
      while (e.value.size() < 24 * 1024) e.value += e.value;
    }
    e.version = in.U64();
    e.expire_unix_ms = static_cast<int64_t>(in.U64());
    CHECK((*writer)->Add(e.key, e.value, e.version, e.expire_unix_ms).ok());
    written->push_back(std::move(e));
  }
  absl::StatusOr<SnapshotMeta> committed = (*writer)->Commit(in.U64());
  CHECK(committed.ok()) << committed.status();
  return committed->path;
}

void MutationMode(InputReader& in) {
  testing::FakeFileSystem fs;
  CHECK(fs.CreateDirs(kDir).ok());
  std::vector<Entry> written;
  const std::string path = WriteSnapshot(in, &fs, &written);

  // Sound, it loads whole.
  const Loaded sound = Load(&fs, path);
  CHECK(sound.meta.ok()) << sound.meta.status();
  CHECK(sound.entries == written) << "a snapshot does not load what was written";

  std::string data = fs.Contents(path);
  const size_t at = in.U32() % data.size();
  uint8_t flip = in.U8();
  if (flip == 0) flip = 0x80;
  data[at] = static_cast<char>(data[at] ^ flip);
  fs.SetContents(path, data);
  const Loaded damaged = Load(&fs, path);
  CHECK(!damaged.meta.ok()) << "a snapshot with byte " << at << " of " << data.size()
                            << " changed loads as sound";
  CheckRefused(damaged, path);
  CHECK_LE(damaged.entries.size(), written.size());
  for (size_t i = 0; i < damaged.entries.size(); ++i) {
    CHECK(damaged.entries[i] == written[i])
        << "a damaged snapshot handed over a different entry at position " << i;
  }
}

// A leader's snapshot sent in fuzzed chunks, some of them tampered with, to
// the follower's SnapshotReceiver (common/replication/snapshot_receiver.h).
void ChunksMode(InputReader& in) {
  testing::FakeFileSystem fs;
  CHECK(fs.CreateDirs(kDir).ok());
  std::vector<Entry> written;
  const std::string original = fs.Contents(WriteSnapshot(in, &fs, &written));

  SnapshotReceiver receiver(&fs, JoinPath(kDir, "snapshot-incoming.tmp"));
  v1::SnapshotBegin begin;
  begin.set_bytes(original.size());
  CHECK(receiver.Begin(begin).ok());
  uint64_t offset = 0;
  bool refused = false;
  bool tampered = false;
  while (offset < original.size()) {
    const uint8_t action = in.U8();
    // At most about 256 chunks, however large the snapshot.
    const size_t size = (1 + original.size() / 256) * (1 + in.U8() % 64);
    v1::SnapshotChunk chunk;
    chunk.set_offset(offset);
    chunk.set_data(original.substr(offset, size));
    chunk.set_checksum(XXH3_64bits(chunk.data().data(), chunk.data().size()));
    const uint64_t next = offset + chunk.data().size();
    bool damaged_in_transit = false;
    switch (action >> 4) {
      case 1: {  // A byte changed on the way: the checksum no longer matches.
        std::string* data = chunk.mutable_data();
        (*data)[action % data->size()] ^= 0x20;
        damaged_in_transit = true;
        break;
      }
      case 2: {  // A byte changed and the checksum made to match (a lying sender).
        std::string* data = chunk.mutable_data();
        (*data)[action % data->size()] ^= 0x20;
        chunk.set_checksum(XXH3_64bits(data->data(), data->size()));
        tampered = true;
        break;
      }
      case 3:  // An offset that is not where the last chunk ended.
        chunk.set_offset(offset + 1 + (action & 0x0f));
        damaged_in_transit = true;
        break;
      case 4:  // The chunk is lost; the next one arrives out of order.
        offset = next;
        tampered = true;
        continue;
      case 5:  // The transfer stops early.
        offset = original.size();
        tampered = true;
        continue;
      default:
        break;
    }
    const absl::Status s = receiver.Chunk(chunk);
    if (damaged_in_transit) {
      CHECK(absl::IsDataLoss(s)) << "a damaged chunk was accepted: " << s;
    }
    if (!s.ok()) {
      CHECK(absl::IsDataLoss(s)) << s;
      refused = true;
      break;
    }
    offset = next;
  }
  if (refused) return;  // The stream ends; nothing is installed.
  CHECK(receiver.End().ok());
  const std::string received = fs.Contents(receiver.path());
  if (!tampered) {
    CHECK(received == original) << "an untouched transfer changed the snapshot";
  }
  // Whatever arrived, it is installed only if it verifies, and then it must
  // be the leader's snapshot.
  absl::StatusOr<SnapshotMeta> verified = VerifySnapshot(&fs, receiver.path());
  if (verified.ok()) {
    CHECK(received == original) << "a follower would install a snapshot the leader did not send";
  } else {
    CHECK(absl::IsDataLoss(verified.status())) << verified.status();
  }
}

}  // namespace
}  // namespace kvstore::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kvstore::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvstore::fuzz::InputReader in(data, size);
  switch (in.U8() % 3) {
    case 0:
      kvstore::fuzz::RawMode(in.Rest());
      break;
    case 1:
      kvstore::fuzz::MutationMode(in);
      break;
    case 2:
      kvstore::fuzz::ChunksMode(in);
      break;
  }
  return 0;
}
