#include "common/coord/lease.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "glog/logging.h"
#include "grpcpp/client_context.h"

namespace kvstore::coord {

struct Lease::Stream {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<etcdserverpb::Lease::Stub> stub;
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<etcdserverpb::LeaseKeepAliveRequest,
                                           etcdserverpb::LeaseKeepAliveResponse>>
      rw;
  std::thread reader;
  bool answered = false;  // Written by the reader; read after it is joined.
};

absl::StatusOr<std::unique_ptr<Lease>> Lease::Grant(EtcdClient* client, LeaseOptions options) {
  if (options.ttl < kMinTtl) {
    return absl::InvalidArgumentError(
        absl::StrCat("lease TTL ", absl::FormatDuration(options.ttl), " is below the minimum of ",
                     absl::FormatDuration(kMinTtl),
                     " (etcd 3.4 grants no shorter lease: it would silently last longer)"));
  }
  const int64_t ttl_seconds = absl::ToInt64Seconds(options.ttl);
  if (options.margin < absl::ZeroDuration() || options.margin * 2 >= absl::Seconds(ttl_seconds)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "lease margin ", absl::FormatDuration(options.margin), " must be in [0, TTL/2)"));
  }
  if (!options.clock) options.clock = SteadyNanos;
  const int64_t sent = options.clock();
  absl::StatusOr<GrantedLease> granted = client->LeaseGrant(ttl_seconds);
  if (!granted.ok()) return granted.status();
  if (granted->ttl_seconds <= 0) {
    return absl::InternalError(
        absl::StrCat("etcd granted lease ", granted->id, " with TTL ", granted->ttl_seconds));
  }
  const absl::Duration ttl = absl::Seconds(granted->ttl_seconds);
  const int64_t valid_until = sent + absl::ToInt64Nanoseconds(ttl - options.margin);
  LOG(INFO) << "etcd lease " << granted->id << " granted, TTL " << absl::FormatDuration(ttl);
  return std::unique_ptr<Lease>(
      new Lease(client, std::move(options), granted->id, ttl, valid_until));
}

Lease::Lease(EtcdClient* client, LeaseOptions options, int64_t id, absl::Duration ttl,
             int64_t valid_until)
    : client_(client),
      options_(std::move(options)),
      id_(id),
      ttl_(ttl),
      interval_ns_(absl::ToInt64Nanoseconds(ttl) / 5),
      valid_until_(valid_until) {
  keepalive_thread_ = std::thread([this] { KeepAliveLoop(); });
  watchdog_thread_ = std::thread([this] { WatchdogLoop(); });
}

Lease::~Lease() { Shutdown(); }

int64_t Lease::valid_until() const {
  absl::MutexLock lock(&mu_);
  return valid_until_;
}

bool Lease::Valid() const {
  absl::MutexLock lock(&mu_);
  return !lost_ && options_.clock() < valid_until_;
}

bool Lease::lost() const {
  absl::MutexLock lock(&mu_);
  return lost_;
}

void Lease::PauseKeepAlivesForTesting(bool paused) {
  absl::MutexLock lock(&mu_);
  paused_ = paused;
  cv_.SignalAll();
}

absl::Status Lease::Revoke() {
  // Stop acting on the lease before etcd deletes its keys.
  Lose(absl::CancelledError(absl::StrCat("lease ", id_, " revoked")));
  Shutdown();
  absl::Status s = client_->LeaseRevoke(id_);
  if (!s.ok()) LOG(WARNING) << "revoking lease " << id_ << ": " << s;
  return s;
}

void Lease::Lose(const absl::Status& why) {
  {
    absl::MutexLock lock(&mu_);
    if (lost_ || stopping_) return;
    lost_ = true;
    cv_.SignalAll();
  }
  LOG(WARNING) << "etcd lease " << id_ << " lost: " << why;
  if (options_.on_lost) options_.on_lost(why);
}

void Lease::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (stream_ != nullptr) stream_->context.TryCancel();
    cv_.SignalAll();
  }
  if (keepalive_thread_.joinable()) keepalive_thread_.join();
  if (watchdog_thread_.joinable()) watchdog_thread_.join();
}

void Lease::WaitNanos(int64_t ns) {
  // At most one keepalive interval, so that an injected clock that does not
  // follow real time is still looked at regularly.
  ns = std::clamp<int64_t>(ns, 1'000'000, interval_ns_);
  cv_.WaitWithTimeout(&mu_, absl::Nanoseconds(ns));
}

void Lease::WatchdogLoop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_ && !lost_) {
    const int64_t now = options_.clock();
    if (now >= valid_until_) {
      const int64_t late_ms = (now - valid_until_) / 1'000'000;
      mu_.Unlock();
      Lose(absl::UnavailableError(absl::StrFormat(
          "lease %d: no keepalive answered in time; valid_until passed %d ms ago", id_, late_ms)));
      mu_.Lock();
      break;
    }
    WaitNanos(valid_until_ - now);
  }
}

void Lease::KeepAliveLoop() {
  etcdserverpb::LeaseKeepAliveRequest request;
  request.set_id(id_);
  std::unique_ptr<Stream> stream;
  // The grant itself renewed the lease: the first keepalive is due after one
  // interval.
  int64_t next_send = options_.clock() + interval_ns_;

  auto close = [&](Stream* s) {
    s->context.TryCancel();
    if (s->reader.joinable()) s->reader.join();
    const grpc::Status status = s->rw->Finish();
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE)
      client_->ReportUnavailable(s->channel);
    bool ours;  // We ended it: Shutdown or "lost".
    {
      absl::MutexLock lock(&mu_);
      ours = stopping_ || lost_;
    }
    // Only a stream that worked is worth a warning; retries of a dead
    // endpoint every TTL/5 would flood the log.
    if (ours) {
      VLOG(1) << "etcd lease " << id_ << ": keepalive stream closed";
    } else if (s->answered) {
      LOG(WARNING) << "etcd lease " << id_ << ": keepalive stream ended: " << status.error_code()
                   << " " << status.error_message();
    } else {
      VLOG(1) << "etcd lease " << id_ << ": keepalive stream failed: " << status.error_code() << " "
              << status.error_message();
    }
  };

  mu_.Lock();
  while (!stopping_ && !lost_) {
    const int64_t now = options_.clock();
    if (stream != nullptr && stream_broken_) {
      stream_ = nullptr;
      mu_.Unlock();
      close(stream.get());
      stream.reset();
      mu_.Lock();
      next_send = now + interval_ns_;  // Reopen after a pause, not in a loop.
      continue;
    }
    if (paused_ || now < next_send) {
      WaitNanos(paused_ ? interval_ns_ : next_send - now);
      continue;
    }
    if (stream == nullptr) {
      auto s = std::make_unique<Stream>();
      s->channel = client_->CurrentChannel();
      s->stub = etcdserverpb::Lease::NewStub(s->channel);
      // Published before the call starts, so that Shutdown can cancel a
      // start that blocks.
      stream_ = s.get();
      unanswered_.clear();
      stream_broken_ = false;
      mu_.Unlock();
      s->rw = s->stub->LeaseKeepAlive(&s->context);
      Stream* raw = s.get();
      s->reader = std::thread([this, raw] { ReadLoop(raw); });
      mu_.Lock();
      stream = std::move(s);
      continue;  // stopping_ may have been set meanwhile.
    }
    unanswered_.push_back(now);
    next_send = now + interval_ns_;
    mu_.Unlock();
    const bool written = stream->rw->Write(request);
    mu_.Lock();
    if (!written) stream_broken_ = true;
  }
  stream_ = nullptr;
  mu_.Unlock();
  if (stream != nullptr) close(stream.get());
}

void Lease::ReadLoop(Stream* stream) {
  etcdserverpb::LeaseKeepAliveResponse response;
  while (stream->rw->Read(&response)) {
    bool expired = false;
    {
      absl::MutexLock lock(&mu_);
      if (unanswered_.empty()) continue;  // Not ours to match; etcd answers in order.
      const int64_t sent = unanswered_.front();
      unanswered_.pop_front();
      if (response.ttl() <= 0) {
        expired = true;
      } else {
        stream->answered = true;
        const int64_t until =
            sent + absl::ToInt64Nanoseconds(absl::Seconds(response.ttl()) - options_.margin);
        valid_until_ = std::max(valid_until_, until);
        cv_.SignalAll();
      }
    }
    if (expired) {
      Lose(absl::NotFoundError(absl::StrCat(
          "lease ", id_, " expired in etcd (keepalive answered TTL ", response.ttl(), ")")));
    }
  }
  absl::MutexLock lock(&mu_);
  stream_broken_ = true;
  cv_.SignalAll();
}

}  // namespace kvstore::coord
