#include "tools/kvbench/kvstore_target.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "tools/kvbench/kvstore_requests.h"

namespace kvstore::bench {

namespace v1 = ::kvstore::v1;
using Clock = std::chrono::steady_clock;

namespace {

std::chrono::system_clock::time_point DeadlineAfter(absl::Duration d) {
  return std::chrono::system_clock::now() + absl::ToChronoMicroseconds(d);
}

}  // namespace

struct KvStoreTarget::Slot {
  v1::KeyValue::Stub* stub = nullptr;
  std::mt19937_64 rng;
  std::unique_ptr<grpc::ClientContext> context;  // a fresh one per call
  bool is_read = false;
  Clock::time_point start;
  std::string key;  // scratch for unary calls
  v1::GetRequest get_request;
  v1::GetResponse get_response;
  v1::SetRequest set_request;
  v1::SetResponse set_response;
  v1::MultiGetRequest multi_get_request;
  v1::MultiGetResponse multi_get_response;
  v1::MultiSetRequest multi_set_request;
  v1::MultiSetResponse multi_set_response;
  SlotStats stats;
};

KvStoreTarget::KvStoreTarget(const BenchConfig& config, const ClientSecurity& security)
    : config_(config), keys_(config.distribution, config.keyspace), value_(config.value_size, 'v') {
  const std::string address = absl::StrCat(config_.host, ":", config_.port);
  for (uint64_t i = 0; i < config_.channels; ++i) {
    grpc::ChannelArguments args;
    // Each channel its own TCP connection: channels with equal arguments would
    // otherwise share one subchannel from the global pool.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("kvbench.channel", static_cast<int>(i));
    args.SetMaxSendMessageSize(256 << 20);
    args.SetMaxReceiveMessageSize(-1);
    channels_.push_back(CreateClientChannel(address, security, args));
    stubs_.push_back(v1::KeyValue::NewStub(channels_.back()));
  }
}

KvStoreTarget::~KvStoreTarget() = default;

absl::Status KvStoreTarget::Connect() {
  const std::string address = absl::StrCat(config_.host, ":", config_.port);
  for (const auto& channel : channels_) {
    if (!channel->WaitForConnected(DeadlineAfter(config_.connect_timeout))) {
      return absl::UnavailableError(absl::StrCat("cannot connect to ", address, " within ",
                                                 absl::FormatDuration(config_.connect_timeout)));
    }
  }
  // One call, to tell "not a kvstore server" from "kvstore, busy".
  grpc::ClientContext context;
  context.set_deadline(DeadlineAfter(config_.connect_timeout));
  v1::GetRequest request;
  request.set_key(KeyName(0));
  v1::GetResponse response;
  const grpc::Status status = stubs_[0]->Get(&context, request, &response);
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
    return absl::FailedPreconditionError(
        absl::StrCat(address, " does not serve kvstore.v1.KeyValue: ", status.error_message()));
  }
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
    return absl::UnauthenticatedError(
        absl::StrCat(address, " refused the probe Get: ", status.error_message(),
                     " (give --auth-token-file, and --tls-* for a TLS server; docs/security.md)"));
  }
  if (!status.ok()) {
    std::fprintf(stderr, "kvbench: warning: probe Get: %s: %s (continuing)\n",
                 CodeName(status.error_code()).c_str(), status.error_message().c_str());
  }
  return absl::OkStatus();
}

absl::Status KvStoreTarget::Preload() {
  constexpr uint64_t kPreloadBatch = 1000;
  const uint64_t batches = (config_.keyspace + kPreloadBatch - 1) / kPreloadBatch;
  std::atomic<uint64_t> next{0};
  absl::Mutex error_mu;
  absl::Status first_error;
  const uint64_t threads = std::min<uint64_t>(4, batches);
  std::vector<std::thread> workers;
  for (uint64_t t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      v1::KeyValue::Stub* stub = stubs_[t % stubs_.size()].get();
      for (uint64_t b = next++; b < batches; b = next++) {
        v1::MultiSetRequest request;
        request.mutable_ack()->set_mode(static_cast<v1::AckMode>(config_.ack_mode));
        request.mutable_ack()->set_replicas(config_.ack_replicas);
        const uint64_t end = std::min(config_.keyspace, (b + 1) * kPreloadBatch);
        for (uint64_t i = b * kPreloadBatch; i < end; ++i) {
          v1::SetItem* item = request.add_items();
          item->set_key(KeyName(i));
          item->set_value(value_);
        }
        grpc::ClientContext context;
        context.set_deadline(DeadlineAfter(std::max(config_.call_timeout, absl::Seconds(30))));
        v1::MultiSetResponse response;
        grpc::Status status = stub->MultiSet(&context, request, &response);
        absl::Status error;
        if (!status.ok()) {
          error = absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                               absl::StrCat("MultiSet: ", status.error_message()));
        } else {
          for (const v1::SetResult& r : response.results()) {
            if (r.error().code() != 0) {
              error = absl::Status(static_cast<absl::StatusCode>(r.error().code()),
                                   absl::StrCat("MultiSet item: ", r.error().message()));
              break;
            }
          }
        }
        if (!error.ok()) {
          absl::MutexLock lock(&error_mu);
          if (first_error.ok()) first_error = error;
          next = batches;  // the others stop after their current batch
          return;
        }
      }
    });
  }
  for (std::thread& w : workers) w.join();
  return first_error;
}

void KvStoreTarget::Start(RunControl* control) {
  control_ = control;
  for (uint64_t i = 0; i < config_.concurrency; ++i) {
    auto slot = std::make_unique<Slot>();
    slot->stub = stubs_[i % stubs_.size()].get();
    slot->rng.seed(config_.seed * 1'000'003 + i);
    slots_.push_back(std::move(slot));
  }
  {
    absl::MutexLock lock(&mu_);
    active_ = slots_.size();
  }
  for (const auto& slot : slots_) Issue(slot.get());
}

void KvStoreTarget::Issue(Slot* slot) {
  slot->is_read = NextIsRead(config_.workload, slot->rng);
  slot->context = std::make_unique<grpc::ClientContext>();
  slot->context->set_deadline(DeadlineAfter(config_.call_timeout));
  auto done = [this, slot](grpc::Status status) { OnDone(slot, status); };
  v1::KeyValue::Stub::async_interface* async = slot->stub->async();
  grpc::ClientContext* context = slot->context.get();
  if (config_.batch == 1 && slot->is_read) {
    FillGet(config_, keys_, slot->rng, &slot->get_request);
    slot->start = Clock::now();
    async->Get(context, &slot->get_request, &slot->get_response, std::move(done));
  } else if (config_.batch == 1) {
    FillSet(config_, keys_, value_, slot->rng, &slot->set_request);
    slot->start = Clock::now();
    async->Set(context, &slot->set_request, &slot->set_response, std::move(done));
  } else if (slot->is_read) {
    FillMultiGet(config_, keys_, slot->rng, &slot->multi_get_request);
    slot->start = Clock::now();
    async->MultiGet(context, &slot->multi_get_request, &slot->multi_get_response, std::move(done));
  } else {
    FillMultiSet(config_, keys_, value_, slot->rng, &slot->multi_set_request);
    slot->start = Clock::now();
    async->MultiSet(context, &slot->multi_set_request, &slot->multi_set_response, std::move(done));
  }
}

void KvStoreTarget::OnDone(Slot* slot, const grpc::Status& status) {
  CountAnswer(config_, status.error_code(), slot->is_read ? &slot->multi_get_response : nullptr,
              slot->is_read ? nullptr : &slot->multi_set_response, Clock::now() - slot->start,
              control_, &slot->stats);
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

void KvStoreTarget::Tick() {
  std::vector<Slot*> retry;
  {
    absl::MutexLock lock(&mu_);
    retry.swap(parked_);
  }
  for (Slot* slot : retry) Issue(slot);
}

bool KvStoreTarget::Drain(absl::Duration grace) {
  absl::MutexLock lock(&mu_);
  active_ -= parked_.size();
  parked_.clear();
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return active_ == 0; };
  return mu_.AwaitWithTimeout(absl::Condition(&idle), grace);
}

SlotStats KvStoreTarget::Collect() {
  SlotStats total;
  for (const auto& slot : slots_) total.Merge(slot->stats);
  return total;
}

}  // namespace kvstore::bench
