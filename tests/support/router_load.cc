#include "tests/support/router_load.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/support/process.h"

namespace kvstore::testing {

void WriteLedger::SetPeriod(int period) {
  absl::MutexLock l(&mu_);
  period_ = std::clamp(period, 0, 2);
}

void WriteLedger::Acked(const std::string& key, const std::string& value, uint64_t version,
                        absl::Duration took) {
  absl::MutexLock l(&mu_);
  latencies_ms_[period_].push_back(absl::ToDoubleMilliseconds(took));
  Entry& e = keys_[key];
  if (version <= e.version) {
    ADD_FAILURE() << key << ": acknowledged version " << version << " after " << e.version;
  }
  e.version = version;
  e.value = value;
  e.pending.clear();
  ++acks_;
  longest_ = std::max(longest_, took);
}

void WriteLedger::Failed(const std::string& key, const std::string& value,
                         const grpc::Status& status) {
  absl::MutexLock l(&mu_);
  keys_[key].pending.push_back(value);
  if (++failures_ <= 5) {
    std::printf("write of %s failed: %d %s\n", key.c_str(), status.error_code(),
                status.error_message().c_str());
  }
}

std::map<std::string, WriteLedger::Entry> WriteLedger::Snapshot() const {
  absl::MutexLock l(&mu_);
  return keys_;
}

size_t WriteLedger::acks() const {
  absl::MutexLock l(&mu_);
  return acks_;
}

size_t WriteLedger::failures() const {
  absl::MutexLock l(&mu_);
  return failures_;
}

absl::Duration WriteLedger::longest() const {
  absl::MutexLock l(&mu_);
  return longest_;
}

double WriteLedger::Percentile(int period, double q) const {
  absl::MutexLock l(&mu_);
  std::vector<double> v = latencies_ms_[std::clamp(period, 0, 2)];
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))];
}

size_t WriteLedger::Count(int period) const {
  absl::MutexLock l(&mu_);
  return latencies_ms_[std::clamp(period, 0, 2)].size();
}

RouterWriteLoad::RouterWriteLoad(std::function<std::string(int)> router, absl::Duration pace,
                                 std::vector<std::string> counter_keys)
    : router_(std::move(router)), pace_(pace), counter_keys_(std::move(counter_keys)) {
  if (counter_keys_.empty()) {
    for (int c = 0; c < kCounters; ++c) counter_keys_.push_back(absl::StrCat("counter-", c));
  }
  counter_keys_.resize(kCounters);
}

RouterWriteLoad::~RouterWriteLoad() { Stop(); }

void RouterWriteLoad::Start() {
  for (int w = 0; w < kWriters; ++w) threads_.emplace_back([this, w] { Write(w); });
  threads_.emplace_back([this] { Count(); });
}

void RouterWriteLoad::Stop() {
  stop_.store(true);
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

void RouterWriteLoad::Write(int w) {
  std::string address = router_(w);
  auto client = std::make_unique<KvClient>(address, absl::Seconds(5));
  for (uint64_t seq = 0; !stop_.load(); ++seq) {
    if (const std::string now = router_(w); now != address) {
      address = now;
      client = std::make_unique<KvClient>(address, absl::Seconds(5));
    }
    // Half the writes make a key of their own (a write a move loses is then
    // a missing key, not one hidden by a later write), half overwrite one
    // of 50 keys (versions must keep going up).
    const std::string key =
        seq % 2 == 0 ? absl::StrCat("w", w, "-u", seq) : absl::StrCat("w", w, "-k", seq % 100);
    const std::string value = absl::StrCat("w", w, "-s", seq);
    const absl::Time sent = absl::Now();
    v1::SetResponse response;
    const grpc::Status s = client->Set(key, value, &response);
    if (s.ok()) {
      ledger_.Acked(key, value, response.version(), absl::Now() - sent);
    } else {
      ledger_.Failed(key, value, s);
    }
    absl::SleepFor(pace_);
  }
}

void RouterWriteLoad::Count() {
  KvClient client(router_(0), absl::Seconds(5));
  for (uint64_t seq = 0; !stop_.load(); ++seq) {
    const int c = static_cast<int>(seq % kCounters);
    v1::GetResponse got;
    if (!client.Get(counter_key(c), &got).ok()) {
      absl::SleepFor(absl::Milliseconds(5));  // Rate limit while a shard is down.
      continue;
    }
    int64_t n = 0;
    if (got.found() && !absl::SimpleAtoi(got.value(), &n)) {
      ADD_FAILURE() << counter_key(c) << " holds " << got.value();
      return;
    }
    v1::SetRequest set;
    set.set_key(counter_key(c));
    set.set_value(absl::StrCat(n + 1));
    set.set_if_version(got.found() ? got.version() : 0);
    v1::SetResponse response;
    const grpc::Status s = client.Set(set, &response);
    if (s.ok()) {
      ++acked_[c];
    } else if (s.error_code() != grpc::StatusCode::FAILED_PRECONDITION) {
      ++unknown_[c];
    }
    absl::SleepFor(pace_);
  }
}

std::string PaddedValue(int i, const std::string&) {
  std::string value = absl::StrCat("value-", i, "-");
  value.resize(std::max<size_t>(value.size(), 90), 'x');
  return value;
}

absl::StatusOr<std::map<std::string, std::string>> Preload(
    const std::string& router, int count,
    const std::function<std::string(int, const std::string&)>& value, uint64_t ttl_ms,
    const std::string& prefix, absl::Duration retry_for) {
  std::map<std::string, std::string> written;
  KvClient client(router, absl::Seconds(20));
  for (int first = 0; first < count; first += 500) {
    v1::MultiSetRequest request;
    for (int i = first; i < std::min(count, first + 500); ++i) {
      const std::string key = absl::StrCat(prefix, i);
      v1::SetItem* item = request.add_items();
      item->set_key(key);
      item->set_value(value(i, key));
      item->set_ttl_ms(ttl_ms);
    }
    // Retried while it fails: on this shared machine etcd may stall for a
    // moment and a leader lose its lease (UNAVAILABLE), which is not what
    // these tests are about.
    v1::MultiSetResponse response;
    grpc::Status s;
    std::string failed;
    const bool ok = WaitFor(
        [&] {
          response.Clear();
          s = client.MultiSet(request, &response);
          if (!s.ok()) return false;
          for (const v1::SetResult& r : response.results()) {
            if (r.error().code() != 0) {
              failed = r.error().message();
              return false;
            }
          }
          return response.results_size() == request.items_size();
        },
        absl::Now() + retry_for, absl::Milliseconds(200));
    if (!ok) {
      return absl::UnavailableError(
          absl::StrCat("preload through ", router, ": ", s.error_message(), " ", failed));
    }
    for (const v1::SetItem& item : request.items()) written[item.key()] = item.value();
  }
  return written;
}

std::vector<v1::GetResult> ReadThroughRouter(const std::string& router,
                                             const std::vector<std::string>& keys) {
  KvClient client(router, absl::Seconds(10));
  std::vector<v1::GetResult> out(keys.size());
  for (size_t first = 0; first < keys.size(); first += 500) {
    v1::MultiGetRequest request;
    for (size_t i = first; i < std::min(keys.size(), first + 500); ++i) request.add_keys(keys[i]);
    v1::MultiGetResponse response;
    const grpc::Status s = client.MultiGet(request, &response);
    for (size_t i = first; i < std::min(keys.size(), first + 500); ++i) {
      const int at = static_cast<int>(i - first);
      if (s.ok() && at < response.results_size() && response.results(at).error().code() == 0) {
        out[i] = response.results(at);
        continue;
      }
      grpc::Status last;
      const bool read = WaitFor(
          [&] {
            v1::GetResponse got;
            last = client.Get(keys[i], &got);
            if (!last.ok()) return false;
            out[i].set_found(got.found());
            out[i].set_value(got.value());
            out[i].set_version(got.version());
            out[i].set_expires_at_ms(got.expires_at_ms());
            return true;
          },
          absl::Now() + absl::Seconds(10), absl::Milliseconds(100));
      if (!read) {
        ADD_FAILURE() << keys[i] << " cannot be read: " << last.error_message();
        out[i].mutable_error()->set_code(last.error_code());
      }
    }
  }
  return out;
}

ReadBackCounts CheckReadBack(const std::string& router,
                             const std::map<std::string, std::string>& preloaded,
                             const RouterWriteLoad* load,
                             const std::function<bool(const std::string&)>& counted) {
  ReadBackCounts c;
  std::vector<std::string> keys;
  std::vector<const std::string*> expected;  // Preloaded value, or null.
  for (const auto& [key, value] : preloaded) {
    keys.push_back(key);
    expected.push_back(&value);
  }
  std::map<std::string, WriteLedger::Entry> ledger;
  std::map<std::string, int> counters;  // Key -> counter.
  if (load != nullptr) {
    ledger = load->ledger().Snapshot();
    for (const auto& [key, entry] : ledger) {
      keys.push_back(key);
      expected.push_back(nullptr);
    }
    for (int i = 0; i < RouterWriteLoad::kCounters; ++i) {
      counters[load->counter_key(i)] = i;
      keys.push_back(load->counter_key(i));
      expected.push_back(nullptr);
    }
  }
  const std::vector<v1::GetResult> got = ReadThroughRouter(router, keys);
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::string& key = keys[i];
    const v1::GetResult& r = got[i];
    if (r.error().code() != 0) continue;  // Reported by ReadThroughRouter.
    if (r.found()) {
      ++c.keys;
      if (counted && counted(key)) c.found_bytes += key.size() + r.value().size();
    }
    if (expected[i] != nullptr) {
      EXPECT_TRUE(r.found()) << key << " (preloaded) is missing";
      EXPECT_EQ(r.value(), *expected[i]) << key << " (preloaded) changed";
      if (r.found() && r.value() == *expected[i]) ++c.preloaded;
      continue;
    }
    if (auto counter = counters.find(key); counter != counters.end()) {
      const int n = counter->second;
      int64_t value = 0;
      if (r.found()) {
        EXPECT_TRUE(absl::SimpleAtoi(r.value(), &value)) << key;
      }
      EXPECT_GE(value, load->acked_increments(n)) << key << " lost acknowledged increments";
      EXPECT_LE(value, load->acked_increments(n) + load->unknown_increments(n))
          << key << " counts increments nobody made";
      c.increments += value;
      continue;
    }
    const WriteLedger::Entry& e = ledger.at(key);
    const bool pending =
        std::find(e.pending.begin(), e.pending.end(), r.value()) != e.pending.end();
    if (e.version == 0) {
      EXPECT_TRUE(!r.found() || pending) << key << " holds " << r.value() << ", never written";
      ++c.unsettled;
      continue;
    }
    EXPECT_TRUE(r.found() && (r.value() == e.value || pending))
        << key << " reads " << (r.found() ? r.value() : "<absent>") << ", last acknowledged "
        << e.value << " (version " << e.version << ")";
    if (r.found() && r.value() == e.value) {
      EXPECT_EQ(r.version(), e.version) << key;
    } else if (r.found() && pending) {
      EXPECT_GT(r.version(), e.version) << key << ": a later write has a lower version";
    }
    ++c.acknowledged;
  }
  return c;
}

}  // namespace kvstore::testing
