#include "common/coord/topology_view.h"

#include <utility>

#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "glog/logging.h"

namespace kvstore::coord {

TopologyView::TopologyView(EtcdClient* client, TopologyViewOptions options)
    : client_(client), options_(std::move(options)) {}

TopologyView::~TopologyView() { Stop(); }

void TopologyView::Start() {
  absl::MutexLock lock(&mu_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { Run(); });
}

void TopologyView::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (stream_ != nullptr) stream_->Cancel();
  }
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<const TopologySnapshot> TopologyView::Current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

int64_t TopologyView::revision() const {
  absl::MutexLock lock(&mu_);
  return revision_;
}

bool TopologyView::watching() const {
  absl::MutexLock lock(&mu_);
  return watching_;
}

TopologyView::Counters TopologyView::counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

void TopologyView::PauseForTesting(bool paused) {
  absl::MutexLock lock(&mu_);
  paused_ = paused;
  if (paused && stream_ != nullptr) stream_->Cancel();
}

bool TopologyView::Pause(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  const absl::Time until = absl::Now() + d;
  while (!stopping_) {
    const absl::Time now = absl::Now();
    if (!paused_ && now >= until) return true;
    // Wakes at once on Stop; a change of paused_ is seen within retry_delay.
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), paused_ ? options_.retry_delay : until - now);
  }
  return false;
}

void TopologyView::Run() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    if (need_read_ && !ReadAll()) {
      if (!Pause(options_.retry_delay)) return;
      continue;
    }
    WatchFromLast();
    if (!Pause(options_.retry_delay)) return;
  }
}

bool TopologyView::ReadAll() {
  {
    absl::MutexLock lock(&mu_);
    if (paused_) return false;
  }
  RangeOptions range;
  range.prefix = true;
  absl::StatusOr<RangeResult> read = client_->Range(options_.prefix, range);
  if (!read.ok()) {
    LOG_EVERY_N(WARNING, 20) << "topology read of " << options_.prefix << ": " << read.status();
    return false;
  }
  entries_.clear();
  for (const mvccpb::KeyValue& kv : read->kvs) {
    absl::string_view key = kv.key();
    if (!absl::ConsumePrefix(&key, options_.prefix)) continue;
    entries_.emplace(std::string(key), kv.value());
  }
  need_read_ = false;
  {
    absl::MutexLock lock(&mu_);
    ++counters_.reads;
  }
  Publish(std::make_shared<const std::map<std::string, std::string>>(entries_), read->revision);
  return true;
}

void TopologyView::WatchFromLast() {
  int64_t last;
  {
    absl::MutexLock lock(&mu_);
    if (paused_ || stopping_) return;
    last = revision_;
  }
  absl::StatusOr<std::unique_ptr<WatchStream>> opened =
      WatchStream::Open(client_, options_.prefix, last + 1);
  if (!opened.ok()) {
    LOG_EVERY_N(WARNING, 20) << "topology watch of " << options_.prefix << ": " << opened.status();
    return;
  }
  std::unique_ptr<WatchStream> stream = std::move(*opened);
  {
    absl::MutexLock lock(&mu_);
    stream_ = stream.get();
    // Cancel() before stream_ was set would have been missed.
    if (paused_ || stopping_) stream->Cancel();
  }
  bool confirmed = false;
  while (true) {
    absl::StatusOr<WatchBatch> batch = stream->Next();
    if (!batch.ok()) {
      absl::MutexLock lock(&mu_);
      if (!stopping_ && !paused_) {
        ++counters_.reconnects;
        LOG(WARNING) << "topology watch of " << options_.prefix << " from revision "
                     << revision_ + 1 << " ended: " << batch.status() << "; reconnecting";
      }
      break;
    }
    if (!confirmed) {
      confirmed = true;
      absl::MutexLock lock(&mu_);
      watching_ = true;
    }
    if (batch->compact_revision > 0) {
      absl::MutexLock lock(&mu_);
      ++counters_.compactions;
      LOG(INFO) << "topology watch of " << options_.prefix << " from revision " << last + 1
                << " hit compaction at " << batch->compact_revision << "; reading afresh";
      need_read_ = true;
      break;
    }
    if (batch->progress()) {
      absl::MutexLock lock(&mu_);
      ++counters_.progress;
      if (batch->revision > revision_) revision_ = batch->revision;
      continue;
    }
    for (const mvccpb::Event& event : batch->events) {
      absl::string_view key = event.kv().key();
      if (!absl::ConsumePrefix(&key, options_.prefix)) continue;
      if (event.type() == mvccpb::Event::DELETE) {
        entries_.erase(std::string(key));
      } else {
        entries_[std::string(key)] = event.kv().value();
      }
    }
    Publish(std::make_shared<const std::map<std::string, std::string>>(entries_), batch->revision);
  }
  absl::MutexLock lock(&mu_);
  stream_ = nullptr;
  watching_ = false;
  // `stream` is destroyed after this, outside the lock.
}

void TopologyView::Publish(std::shared_ptr<const std::map<std::string, std::string>> entries,
                           int64_t revision) {
  auto snapshot = std::make_shared<TopologySnapshot>();
  snapshot->entries = std::move(entries);
  snapshot->revision = revision;
  {
    absl::MutexLock lock(&mu_);
    if (current_ != nullptr && revision <= current_->revision) {
      // A read after a compaction may find the store where the last snapshot
      // left it: the same revision is the same content, not news. An older
      // one means etcd lost its data (a new cluster on the same endpoints).
      LOG_IF(ERROR, revision < current_->revision)
          << "topology revision went back from " << current_->revision << " to " << revision
          << "; snapshot dropped";
      return;
    }
    if (revision > revision_) revision_ = revision;
    current_ = snapshot;
  }
  if (options_.on_snapshot) options_.on_snapshot(snapshot);
}

}  // namespace kvstore::coord
