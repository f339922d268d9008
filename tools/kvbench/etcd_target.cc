#include "tools/kvbench/etcd_target.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace kvstore::bench {

namespace pb = ::etcdserverpb;
using Clock = std::chrono::steady_clock;

namespace {

// Puts in flight while preloading: enough for etcd to batch its raft
// proposals and WAL fsyncs, few enough not to queue past the deadline.
constexpr uint64_t kPreloadInFlight = 128;

std::string CodeName(int code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

std::chrono::system_clock::time_point DeadlineAfter(absl::Duration d) {
  return std::chrono::system_clock::now() + absl::ToChronoMicroseconds(d);
}

absl::Status FromGrpc(const grpc::Status& status, const std::string& what) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(what, ": ", status.error_message()));
}

}  // namespace

struct EtcdTarget::Slot {
  pb::KV::Stub* stub = nullptr;
  std::mt19937_64 rng;
  std::unique_ptr<grpc::ClientContext> context;  // a fresh one per call
  bool is_read = false;
  Clock::time_point start;
  pb::RangeRequest range_request;
  pb::RangeResponse range_response;
  pb::PutRequest put_request;
  pb::PutResponse put_response;
  SlotStats stats;
};

EtcdTarget::EtcdTarget(const BenchConfig& config)
    : config_(config), keys_(config.distribution, config.keyspace), value_(config.value_size, 'v') {
  const std::string address = absl::StrCat(config_.host, ":", config_.port);
  for (uint64_t i = 0; i < config_.channels; ++i) {
    grpc::ChannelArguments args;
    // Each channel its own TCP connection (as in KvStoreTarget).
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("kvbench.channel", static_cast<int>(i));
    args.SetMaxSendMessageSize(256 << 20);
    args.SetMaxReceiveMessageSize(-1);
    channels_.push_back(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
    stubs_.push_back(pb::KV::NewStub(channels_.back()));
  }
}

EtcdTarget::~EtcdTarget() = default;

absl::Status EtcdTarget::Connect() {
  const std::string address = absl::StrCat(config_.host, ":", config_.port);
  for (const auto& channel : channels_) {
    if (!channel->WaitForConnected(DeadlineAfter(config_.connect_timeout))) {
      return absl::UnavailableError(absl::StrCat("cannot connect to ", address, " within ",
                                                 absl::FormatDuration(config_.connect_timeout)));
    }
  }
  // One read, to tell "not etcd" from "etcd, busy".
  grpc::ClientContext context;
  context.set_deadline(DeadlineAfter(config_.connect_timeout));
  pb::RangeRequest request;
  request.set_key(KeyName(0));
  pb::RangeResponse response;
  const grpc::Status status = stubs_[0]->Range(&context, request, &response);
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
    return absl::FailedPreconditionError(
        absl::StrCat(address, " does not serve etcdserverpb.KV: ", status.error_message()));
  }
  if (!status.ok()) {
    std::fprintf(stderr, "kvbench: warning: probe Range: %s: %s (continuing)\n",
                 CodeName(status.error_code()).c_str(), status.error_message().c_str());
  }
  return absl::OkStatus();
}

absl::Status EtcdTarget::Preload() {
  // Each lane keeps one Put in flight; its completion takes the next key.
  struct Lane {
    pb::KV::Stub* stub = nullptr;
    std::unique_ptr<grpc::ClientContext> context;
    pb::PutRequest request;
    pb::PutResponse response;
  };
  absl::Mutex mu;
  uint64_t next_key = 0;   // guarded by mu
  uint64_t in_flight = 0;  // lanes with a Put in flight; guarded by mu
  absl::Status first_error;
  const absl::Duration deadline = std::max(config_.call_timeout, absl::Seconds(30));
  std::vector<Lane> lanes(std::min(kPreloadInFlight, config_.keyspace));

  // Starts the lane's next Put, or retires it when the keys are done or a Put
  // failed. The call is started without mu held: gRPC may run a completion on
  // the calling thread.
  std::function<void(Lane*)> issue = [&](Lane* lane) {
    uint64_t key = 0;
    {
      absl::MutexLock lock(&mu);
      if (next_key >= config_.keyspace || !first_error.ok()) {
        --in_flight;
        return;
      }
      key = next_key++;
    }
    FormatKey(key, lane->request.mutable_key());
    lane->context = std::make_unique<grpc::ClientContext>();
    lane->context->set_deadline(DeadlineAfter(deadline));
    lane->stub->async()->Put(lane->context.get(), &lane->request, &lane->response,
                             [&, lane](grpc::Status status) {
                               if (!status.ok()) {
                                 absl::MutexLock lock(&mu);
                                 if (first_error.ok()) first_error = FromGrpc(status, "Put");
                               }
                               issue(lane);
                             });
  };
  {
    absl::MutexLock lock(&mu);
    in_flight = lanes.size();
  }
  for (size_t i = 0; i < lanes.size(); ++i) {
    lanes[i].stub = stubs_[i % stubs_.size()].get();
    lanes[i].request.set_value(value_);
    issue(&lanes[i]);
  }
  // Every Put has a deadline, so every lane retires.
  absl::MutexLock lock(&mu);
  mu.Await(absl::Condition(
      +[](uint64_t* n) { return *n == 0; }, &in_flight));
  return first_error;
}

void EtcdTarget::Start(RunControl* control) {
  control_ = control;
  for (uint64_t i = 0; i < config_.concurrency; ++i) {
    auto slot = std::make_unique<Slot>();
    slot->stub = stubs_[i % stubs_.size()].get();
    slot->rng.seed(config_.seed * 1'000'003 + i);
    slot->put_request.set_value(value_);
    slots_.push_back(std::move(slot));
  }
  {
    absl::MutexLock lock(&mu_);
    active_ = slots_.size();
  }
  for (const auto& slot : slots_) Issue(slot.get());
}

void EtcdTarget::Issue(Slot* slot) {
  slot->is_read = NextIsRead(config_.workload, slot->rng);
  slot->context = std::make_unique<grpc::ClientContext>();
  slot->context->set_deadline(DeadlineAfter(config_.call_timeout));
  auto done = [this, slot](grpc::Status status) { OnDone(slot, status); };
  const uint64_t key = keys_.Next(slot->rng);
  pb::KV::Stub::async_interface* async = slot->stub->async();
  slot->start = Clock::now();
  if (slot->is_read) {
    FormatKey(key, slot->range_request.mutable_key());
    async->Range(slot->context.get(), &slot->range_request, &slot->range_response, std::move(done));
  } else {
    FormatKey(key, slot->put_request.mutable_key());
    async->Put(slot->context.get(), &slot->put_request, &slot->put_response, std::move(done));
  }
}

void EtcdTarget::OnDone(Slot* slot, const grpc::Status& status) {
  const auto elapsed = Clock::now() - slot->start;
  const bool measuring = control_->phase.load(std::memory_order_acquire) == Phase::kMeasure;
  SlotStats& stats = slot->stats;
  if (status.ok()) {
    // A Range that finds nothing (count 0) is an answered read, as a Get of a
    // missing key is for kvstore.
    control_->completed_ops.fetch_add(1, std::memory_order_relaxed);
    if (measuring) {
      ++stats.calls;
      ++stats.ops;
      stats.latency.Record(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(elapsed).count()));
    }
  } else if (measuring) {
    ++stats.calls;
    stats.AddError(CodeName(status.error_code()), 1);
  }

  if (status.ok() && control_->phase.load(std::memory_order_acquire) != Phase::kStop) {
    Issue(slot);
    return;
  }
  absl::MutexLock lock(&mu_);
  if (control_->phase.load(std::memory_order_acquire) == Phase::kStop) {
    --active_;
  } else {
    parked_.push_back(slot);
  }
}

void EtcdTarget::Tick() {
  std::vector<Slot*> retry;
  {
    absl::MutexLock lock(&mu_);
    retry.swap(parked_);
  }
  for (Slot* slot : retry) Issue(slot);
}

bool EtcdTarget::Drain(absl::Duration grace) {
  absl::MutexLock lock(&mu_);
  active_ -= parked_.size();
  parked_.clear();
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return active_ == 0; };
  return mu_.AwaitWithTimeout(absl::Condition(&idle), grace);
}

SlotStats EtcdTarget::Collect() {
  SlotStats total;
  for (const auto& slot : slots_) total.Merge(slot->stats);
  return total;
}

}  // namespace kvstore::bench
