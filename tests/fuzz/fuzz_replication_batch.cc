// fuzz_replication_batch: the follower's decoding and checks of the records a
// leader pushes (Store::AppendReplicated, what RunFollowerSession calls for
// each Entries message; common/storage/store.h). No gRPC, no streams.
//
// The input first gives the follower a log of its own (a valid batch: epochs
// from 1), then up to kMaxPushes pushes, each either raw bytes or a batch
// framed by our writer from fuzzed indexes, epochs (0 included) and ops,
// optionally with one byte changed. A model of the log (index -> epoch,
// payload) and of the keys says what must hold after each push:
//  - refused: nothing changed (last index, keys);
//  - FAILED_PRECONDITION only for a resent index whose epoch differs from the
//    one this log holds (a divergence), never otherwise;
//  - accepted: the log runs on without a gap with exactly the pushed records
//    above the old last index, and every key is what those records say;
//  - a record that fails its checks, or a gap, is never accepted.
// At the end the store is closed and reopened from its files: recovery
// succeeds and gives back the same log position and the same keys, so an
// accepted batch can never leave a follower that cannot restart.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "common/storage/log_format.h"
#include "common/storage/log_reader.h"
#include "common/storage/op.h"
#include "common/storage/store.h"
#include "glog/logging.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/support/fake_clock.h"
#include "tests/support/fake_file_system.h"

namespace kvstore::fuzz {
namespace {

constexpr int kMaxPushes = 8;
constexpr char kDir[] = "/follower";

struct LogEntry {
  uint64_t epoch = 0;
  log::RecordType type = log::RecordType::kZero;
  std::string payload;
};

struct KeyState {
  std::string value;
  uint64_t version = 0;
  int64_t expire_unix_ms = 0;
};

class Follower {
 public:
  Follower() { Open(); }
  ~Follower() {
    if (store_ != nullptr) CHECK(store_->Close().ok());
  }

  absl::Status Push(absl::string_view records) {
    absl::Status result;
    absl::Notification done;
    store_->AppendReplicated(records, [&](const absl::Status& s) {
      result = s;
      done.Notify();
    });
    done.WaitForNotification();
    return result;
  }

  // Checks the store against the model.
  void Check(const std::map<uint64_t, LogEntry>& log, const std::map<std::string, KeyState>& keys,
             absl::string_view when) {
    const uint64_t last = log.empty() ? 0 : log.rbegin()->first;
    CHECK_EQ(store_->last_index(), last) << when;
    CHECK_EQ(store_->last_epoch(), log.empty() ? 0 : log.rbegin()->second.epoch) << when;
    for (const auto& [key, want] : keys) {
      std::string value;
      uint64_t version = 0;
      int64_t expire = 0;
      CHECK(store_->Get(key, &value, &version, &expire)) << when << ": a key went missing";
      CHECK(value == want.value) << when << ": a key holds another value";
      CHECK_EQ(version, want.version) << when;
      CHECK_EQ(expire, want.expire_unix_ms) << when;
    }
    CHECK_EQ(store_->GetStatus().key_count, keys.size()) << when << ": keys nobody wrote";
  }

  void Restart() {
    CHECK(store_->Close().ok());
    store_.reset();
    Open();
  }

  int64_t now() { return clock_.NowUnixMillis(); }

 private:
  void Open() {
    StoreOptions o;
    o.dir = kDir;
    o.fs = &fs_;
    o.clock = &clock_;
    o.fsync = FsyncPolicy::kNo;
    o.background_maintenance = false;
    o.snapshot_every_writes = 0;
    o.snapshot_every_seconds = 0;
    o.on_fatal_error = [](const absl::Status& s) { LOG(FATAL) << "store failed: " << s; };
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(std::move(o));
    CHECK(store.ok()) << "the follower cannot reopen what it accepted: " << store.status();
    store_ = *std::move(store);
  }

  testing::FakeFileSystem fs_;
  testing::FakeClock clock_;
  std::unique_ptr<Store> store_;
};

// Frames `count` records from `first` with fuzzed epochs (never below
// `min_epoch`) and ops.
std::string BuildBatch(InputReader& in, uint64_t first, int count, uint64_t min_epoch,
                       uint64_t* epoch) {
  std::string out;
  for (int i = 0; i < count; ++i) {
    const uint8_t shape = in.U8();
    if (shape & 0x80) *epoch += 1 + (shape & 0x3);
    if ((shape & 0x70) == 0x70 && *epoch > min_epoch) --*epoch;  // Now and then an older one.
    if (shape & 0x08) {
      log::AppendRecord(first + i, *epoch, log::RecordType::kEpoch, in.ShortBytes(), &out);
      continue;
    }
    OpView op;
    op.type = (shape & 0x04) ? OpType::kDelete : OpType::kPut;
    op.version = in.U64();
    // Mostly no expiry; sometimes one in the past or the future.
    const uint8_t expiry = in.U8();
    op.expire_unix_ms = expiry < 200 ? 0 : 1'700'000'000'000 + (int64_t{expiry} - 228) * 1000;
    op.key = in.Bytes(1 + in.U8() % 4);
    if (op.type == OpType::kPut) op.value = in.ShortBytes();
    std::string payload;
    EncodeOp(op, &payload);
    log::AppendRecord(first + i, *epoch, log::RecordType::kOp, payload, &out);
  }
  return out;
}

struct Parsed {
  uint64_t index;
  LogEntry entry;
};

// The batch's records as the reader frames them, and whether the whole batch
// frames cleanly.
std::vector<Parsed> Frame(absl::string_view batch, bool* clean) {
  std::vector<Parsed> out;
  log::LogReader reader(batch, 0);
  log::LogRecord r;
  log::ReadStatus s;
  while ((s = reader.Next(&r)) == log::ReadStatus::kRecord) {
    out.push_back(
        Parsed{r.header.index, LogEntry{r.header.epoch, r.header.type, std::string(r.payload)}});
  }
  *clean = s == log::ReadStatus::kEndOfInput;
  return out;
}

void ApplyToModel(const LogEntry& e, int64_t now, std::map<std::string, KeyState>* keys) {
  if (e.type != log::RecordType::kOp) return;
  OpView op;
  CHECK(DecodeOp(e.payload, &op));
  if (op.type == OpType::kPut && (op.expire_unix_ms == 0 || op.expire_unix_ms > now)) {
    (*keys)[std::string(op.key)] = KeyState{std::string(op.value), op.version, op.expire_unix_ms};
  } else {
    keys->erase(std::string(op.key));
  }
}

void Run(InputReader& in) {
  Follower follower;
  std::map<uint64_t, LogEntry> log;
  std::map<std::string, KeyState> keys;
  uint64_t epoch = 1 + in.U8() % 3;

  // The follower's own log: a valid batch from index 1.
  const int own = in.U8() % 4;
  if (own > 0) {
    const std::string batch = BuildBatch(in, 1, own, /*min_epoch=*/1, &epoch);
    const absl::Status s = follower.Push(batch);
    CHECK(s.ok()) << "a valid first batch was refused: " << s;
    bool clean = false;
    for (Parsed& p : Frame(batch, &clean)) {
      ApplyToModel(p.entry, follower.now(), &keys);
      log[p.index] = std::move(p.entry);
    }
    follower.Check(log, keys, "after the follower's own log");
  }

  for (int push = 0; push < kMaxPushes && !in.empty(); ++push) {
    std::string batch;
    const uint8_t kind = in.U8();
    if (kind & 1) {
      batch = std::string(in.Bytes(in.U16() % 2048));
    } else {
      const uint64_t last = log.empty() ? 0 : log.rbegin()->first;
      const int64_t delta = static_cast<int64_t>(in.U8() % 7) - 4;  // -4..+2 from last + 1.
      const uint64_t first = std::max<int64_t>(0, static_cast<int64_t>(last) + 1 + delta);
      uint64_t batch_epoch = (kind & 2) ? epoch : 1 + in.U8() % 8;
      // Pushes may carry epoch 0, which no leader writes.
      batch = BuildBatch(in, first, 1 + in.U8() % 4, /*min_epoch=*/0, &batch_epoch);
      if (kind & 2) epoch = batch_epoch;
      if ((kind & 4) && !batch.empty()) {
        const size_t at = in.U16() % batch.size();
        batch[at] = static_cast<char>(batch[at] ^ (in.U8() | 1));
      }
    }

    const uint64_t last = log.empty() ? 0 : log.rbegin()->first;
    bool clean = false;
    const std::vector<Parsed> framed = Frame(batch, &clean);
    const absl::Status s = follower.Push(batch);
    if (!s.ok()) {
      follower.Check(log, keys, "after a refused batch");
      if (absl::IsFailedPrecondition(s)) {
        bool diverged = false;
        for (const Parsed& p : framed) {
          if (p.index > last) break;
          auto it = log.find(p.index);
          if (it != log.end() && it->second.epoch != p.entry.epoch) diverged = true;
        }
        CHECK(diverged) << "FAILED_PRECONDITION without a divergence: " << s;
      } else {
        CHECK(absl::IsInvalidArgument(s)) << s;
      }
      continue;
    }
    CHECK(clean) << "a batch that does not frame cleanly was accepted";
    uint64_t next = last + 1;
    for (const Parsed& p : framed) {
      if (p.index < next && p.index <= last) {
        // A resend: the same record this log holds.
        auto it = log.find(p.index);
        if (it != log.end()) {
          CHECK_EQ(it->second.epoch, p.entry.epoch) << "a diverged resend was accepted";
        }
        continue;
      }
      CHECK_EQ(p.index, next) << "a batch with a gap was accepted";
      OpView op;
      if (p.entry.type == log::RecordType::kOp) {
        CHECK(DecodeOp(p.entry.payload, &op)) << "a record with a bad op was accepted";
      }
      ApplyToModel(p.entry, follower.now(), &keys);
      log[p.index] = p.entry;
      ++next;
    }
    follower.Check(log, keys, "after an accepted batch");
  }

  follower.Restart();
  follower.Check(log, keys, "after a restart");
}

}  // namespace
}  // namespace kvstore::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kvstore::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvstore::fuzz::InputReader in(data, size);
  kvstore::fuzz::Run(in);
  return 0;
}
