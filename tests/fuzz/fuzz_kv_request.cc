// fuzz_kv_request: the public API's requests (proto/kvstore/v1/kv.proto) as
// bytes, through the validation every server applies (common/kv/request_limits.h)
// to a store (common/storage/store.h on an in-memory file system).
//
// The input is a sequence of up to kMaxRequests requests, each a type byte
// (Get, Set, Delete, MultiGet, MultiSet, Scan), a 16-bit length and that many
// bytes parsed as the message. Each parsed request is checked against an
// independent statement of the limits (design.md §2: key 1..max_key_bytes,
// value up to max_value_bytes, known enums, batch size, ttl): validation is OK
// exactly when they hold, and otherwise INVALID_ARGUMENT naming the limit.
// Valid requests are applied as kv-shard applies them, and the store agrees:
// a Set that succeeded reads back with its version, a Delete that succeeded
// leaves the key absent, versions of a key only grow, a scan page keeps to its
// prefix and limit. Small limits let short inputs cross them.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "common/kv/request_limits.h"
#include "common/kv/scan_cursor.h"
#include "common/storage/store.h"
#include "glog/logging.h"
#include "kvstore/v1/kv.pb.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/support/fake_clock.h"
#include "tests/support/fake_file_system.h"

namespace kvstore::fuzz {
namespace {

constexpr int kMaxRequests = 8;

RequestLimits Limits() {
  RequestLimits limits;
  limits.max_key_bytes = 16;
  limits.max_value_bytes = 64;
  limits.max_batch_items = 8;
  limits.max_response_bytes = 4096;
  return limits;
}

// The limits as design.md states them, written apart from request_limits.cc.
bool KeyOk(const std::string& key, const RequestLimits& l) {
  return !key.empty() && key.size() <= l.max_key_bytes;
}
bool ValueOk(const std::string& value, uint64_t ttl_ms, const RequestLimits& l) {
  return value.size() <= l.max_value_bytes && ttl_ms <= l.max_ttl_ms;
}
bool AckOk(const v1::WriteAck& ack) { return v1::AckMode_IsValid(ack.mode()); }
bool ReadModeOk(int mode) {
  return mode == v1::READ_MODE_LEADER || mode == v1::READ_MODE_ANY_REPLICA;
}

// The verdict of validation against the oracle's.
void CheckVerdict(const absl::Status& s, bool valid, absl::string_view what) {
  if (valid) {
    CHECK(s.ok()) << what << ": a valid request was refused: " << s;
    return;
  }
  CHECK(absl::IsInvalidArgument(s)) << what << ": an invalid request got " << s;
  const absl::string_view m = s.message();
  CHECK(absl::StrContains(m, "limit") || absl::StrContains(m, "empty") ||
        absl::StrContains(m, "unknown"))
      << what << ": the refusal does not name the limit: " << m;
}

class Harness {
 public:
  Harness() {
    StoreOptions o;
    o.dir = "/data";
    o.fs = &fs_;
    o.clock = &clock_;
    o.fsync = FsyncPolicy::kNo;
    o.background_maintenance = false;
    o.snapshot_every_writes = 0;
    o.snapshot_every_seconds = 0;
    o.on_fatal_error = [](const absl::Status& s) { LOG(FATAL) << "store failed: " << s; };
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(std::move(o));
    CHECK(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  ~Harness() { CHECK(store_->Close().ok()); }

  void Run(int type, absl::string_view bytes) {
    switch (type) {
      case 0: {
        v1::GetRequest r;
        if (!r.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return;
        const bool valid = ReadModeOk(r.read_mode()) && KeyOk(r.key(), limits_);
        CheckVerdict(CheckGet(r, limits_), valid, "Get");
        if (valid) ReadBack(r.key());
        return;
      }
      case 1: {
        v1::SetRequest r;
        if (!r.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return;
        const bool valid =
            KeyOk(r.key(), limits_) && ValueOk(r.value(), r.ttl_ms(), limits_) && AckOk(r.ack());
        CheckVerdict(CheckSet(r, limits_), valid, "Set");
        if (!valid) return;
        Mutation m;
        m.kind = Mutation::Kind::kSet;
        m.key = r.key();
        m.value = r.value();
        m.ttl_ms = r.ttl_ms();
        if (r.has_if_version()) m.if_version = r.if_version();
        Apply({std::move(m)});
        return;
      }
      case 2: {
        v1::DeleteRequest r;
        if (!r.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return;
        const bool valid = KeyOk(r.key(), limits_) && AckOk(r.ack());
        CheckVerdict(CheckDelete(r, limits_), valid, "Delete");
        if (!valid) return;
        Mutation m;
        m.kind = Mutation::Kind::kDelete;
        m.key = r.key();
        if (r.has_if_version()) m.if_version = r.if_version();
        Apply({std::move(m)});
        return;
      }
      case 3: {
        v1::MultiGetRequest r;
        if (!r.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return;
        bool valid = ReadModeOk(r.read_mode()) &&
                     static_cast<size_t>(r.keys_size()) <= limits_.max_batch_items;
        for (const std::string& key : r.keys()) valid = valid && KeyOk(key, limits_);
        CheckVerdict(CheckMultiGet(r, limits_), valid, "MultiGet");
        if (!valid) return;
        for (const std::string& key : r.keys()) ReadBack(key);
        return;
      }
      case 4: {
        v1::MultiSetRequest r;
        if (!r.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return;
        bool valid =
            AckOk(r.ack()) && static_cast<size_t>(r.items_size()) <= limits_.max_batch_items;
        for (const v1::SetItem& item : r.items()) {
          valid =
              valid && KeyOk(item.key(), limits_) && ValueOk(item.value(), item.ttl_ms(), limits_);
        }
        CheckVerdict(CheckMultiSet(r, limits_), valid, "MultiSet");
        if (!valid) return;
        std::vector<Mutation> batch;
        for (const v1::SetItem& item : r.items()) {
          Mutation& m = batch.emplace_back();
          m.kind = Mutation::Kind::kSet;
          m.key = item.key();
          m.value = item.value();
          m.ttl_ms = item.ttl_ms();
          if (item.has_if_version()) m.if_version = item.if_version();
        }
        Apply(std::move(batch));
        return;
      }
      case 5: {
        v1::ScanRequest r;
        if (!r.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return;
        const bool valid = ReadModeOk(r.read_mode()) && r.prefix().size() <= limits_.max_key_bytes;
        CheckVerdict(CheckScan(r, limits_), valid, "Scan");
        if (!valid) return;
        absl::StatusOr<NodeScanCursor> cursor = DecodeNodeCursor(r.cursor());
        if (!cursor.ok()) {
          CHECK(absl::IsInvalidArgument(cursor.status())) << cursor.status();
          return;
        }
        KvMap::ScanOptions options;
        options.prefix = r.prefix();
        options.limit = ScanPageLimit(r, limits_);
        options.keys_only = r.keys_only();
        CHECK_GE(options.limit, 1u);
        CHECK_LE(options.limit, limits_.max_batch_items);
        KvMap::ScanPage page =
            store_->Scan(KvMap::ScanPosition{cursor->hash, std::move(cursor->after_key)}, options);
        CHECK_LE(page.entries.size(), options.limit);
        for (const KvMap::ScannedEntry& e : page.entries) {
          CHECK(absl::StartsWith(e.key, r.prefix())) << "a scan left its prefix";
          if (r.keys_only()) CHECK(e.value.empty());
        }
        return;
      }
    }
  }

 private:
  // What this input has written so far, per key: value and version, or absent.
  struct Known {
    bool present = false;
    std::string value;
    uint64_t version = 0;
  };

  void Apply(std::vector<Mutation> batch) {
    const std::vector<Mutation> sent = batch;
    std::vector<MutationResult> results;
    absl::Notification done;
    store_->Write(std::move(batch), Durability::kDefault, [&](std::vector<MutationResult> r) {
      results = std::move(r);
      done.Notify();
    });
    done.WaitForNotification();
    CHECK_EQ(results.size(), sent.size());
    for (size_t i = 0; i < sent.size(); ++i) {
      const Mutation& m = sent[i];
      const MutationResult& r = results[i];
      Known& k = known_[m.key];
      if (!r.status.ok()) {
        // Only a condition that does not hold refuses a write here.
        CHECK(absl::IsFailedPrecondition(r.status)) << r.status;
        CHECK(m.if_version.has_value()) << "an unconditional write failed: " << r.status;
        CHECK(*m.if_version != (k.present ? k.version : 0))
            << "a compare-and-set on the current version failed: " << r.status;
        continue;
      }
      if (m.if_version.has_value()) {
        CHECK_EQ(*m.if_version, k.present ? k.version : 0)
            << "a compare-and-set succeeded on a version the key did not have";
      }
      if (m.kind == Mutation::Kind::kSet) {
        CHECK_GT(r.version, last_version_) << "versions must grow";
        last_version_ = r.version;
        k = Known{true, m.value, r.version};
      } else {
        CHECK_EQ(r.applied, k.present) << "a delete's answer disagrees with the key's presence";
        if (r.applied) {
          CHECK_GT(r.version, last_version_) << "versions must grow";
          last_version_ = r.version;
        }
        k = Known{};
      }
    }
    for (const Mutation& m : sent) ReadBack(m.key);
  }

  // A key this input wrote reads back as written (the fake clock does not
  // move, so nothing expires).
  void ReadBack(const std::string& key) {
    std::string value;
    uint64_t version = 0;
    const bool found = store_->Get(key, &value, &version);
    auto it = known_.find(key);
    if (it == known_.end()) {
      CHECK(!found) << "a key no one wrote is present";
      return;
    }
    CHECK_EQ(found, it->second.present) << "a key's presence is not what was written";
    if (found) {
      CHECK(value == it->second.value) << "a key reads back another value";
      CHECK_EQ(version, it->second.version);
    }
  }

  const RequestLimits limits_ = Limits();
  testing::FakeFileSystem fs_;
  testing::FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::map<std::string, Known> known_;
  uint64_t last_version_ = 0;
};

}  // namespace
}  // namespace kvstore::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kvstore::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvstore::fuzz::InputReader in(data, size);
  kvstore::fuzz::Harness harness;
  for (int i = 0; i < kvstore::fuzz::kMaxRequests && !in.empty(); ++i) {
    const int type = in.U8() % 6;
    const uint16_t len = in.U16();
    harness.Run(type, in.Bytes(len));
  }
  return 0;
}
