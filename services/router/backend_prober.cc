#include "services/router/backend_prober.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "grpcpp/client_context.h"
#include "kvstore/v1/admin.pb.h"

namespace kvstore {
namespace {

// "shard-0 leader", "shard-1 replica", or "" for an address the topology
// does not list (a learned leader).
std::string PlaceOf(const RoutingTable& table, const std::string& address) {
  for (const ShardTopology& shard : table.topology().shards) {
    if (shard.leader == address) return absl::StrCat(shard.name, " leader");
    for (const std::string& replica : shard.replicas) {
      if (replica == address) return absl::StrCat(shard.name, " replica");
    }
  }
  return "";
}

std::string Summary(const NodeHealth& h) {
  std::string out = absl::StrCat("role ", h.role.empty() ? "(none)" : h.role, ", epoch ", h.epoch,
                                 ", last_index ", h.last_index);
  if (h.role == "replica") absl::StrAppend(&out, ", lag ", h.lag_entries, " entries");
  return out;
}

}  // namespace

int ApplyLeaderProbes(RoutingTable& table, const HealthBook& health) {
  const HealthLookup lookup = health.Lookup();
  int changes = 0;
  for (int shard = 0; shard < table.shard_count(); ++shard) {
    std::optional<RoutingTable::LeaderChange> change = table.ApplyProbes(shard, lookup);
    if (!change) continue;
    ++changes;
    LOG(WARNING) << "Leader change: shard " << table.shard_name(shard) << " writes now go to "
                 << change->to << " (was " << change->from << "): " << change->reason;
  }
  return changes;
}

BackendProber::BackendProber(BackendChannels* channels, HealthBook* health, TableSource tables,
                             ProbeOptions options)
    : channels_(channels), health_(health), tables_(std::move(tables)), options_(options) {}

BackendProber::~BackendProber() { Stop(); }

void BackendProber::Start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { Loop(); });
}

void BackendProber::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

uint64_t BackendProber::rounds() const {
  absl::MutexLock lock(&mu_);
  return rounds_;
}

void BackendProber::Loop() {
  for (;;) {
    const absl::Time next = absl::Now() + options_.interval;
    ProbeOnce();
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithDeadline(absl::Condition(&stopping_), next);
    if (stopping_) return;
  }
}

void BackendProber::ProbeOnce() {
  absl::MutexLock round(&round_mu_);
  const std::shared_ptr<RoutingTable> table = tables_();
  const std::vector<std::string> addresses = table->ProbeAddresses();

  // Owned by this thread; a callback only fills in its probe's status. The
  // stubs and contexts (which hold their channel) are released here, never in
  // a callback (see backend_channels.h).
  struct Probe {
    std::shared_ptr<v1::Admin::Stub> stub;
    grpc::ClientContext context;
    v1::StatusRequest request;
    v1::StatusResponse response;
    grpc::Status status;
  };
  std::vector<std::unique_ptr<Probe>> probes;
  {
    absl::MutexLock lock(&pending_mu_);
    pending_ = addresses.size();
  }
  const auto deadline = absl::ToChronoTime(absl::Now() + options_.timeout);
  for (const std::string& address : addresses) {
    probes.push_back(std::make_unique<Probe>());
    Probe* probe = probes.back().get();
    probe->stub = channels_->AdminStub(address);
    probe->context.set_deadline(deadline);
    probe->stub->async()->Status(&probe->context, &probe->request, &probe->response,
                                 [this, probe](grpc::Status status) {
                                   probe->status = std::move(status);
                                   absl::MutexLock lock(&pending_mu_);
                                   --pending_;
                                 });
  }
  {
    // Every call has a deadline, so every callback comes.
    absl::MutexLock lock(&pending_mu_);
    pending_mu_.Await(absl::Condition(
        +[](size_t* pending) { return *pending == 0; }, &pending_));
  }

  const absl::Time now = absl::Now();
  for (size_t i = 0; i < addresses.size(); ++i) {
    const Probe& probe = *probes[i];
    NodeHealth health;
    health.probed_at = now;
    if (probe.status.ok()) {
      const v1::StatusResponse& r = probe.response;
      health.probe = NodeHealth::Probe::kOk;
      health.role = r.role();
      health.epoch = r.epoch();
      health.last_index = r.last_index();
      health.lag_entries = r.lag_entries();
      health.leader = r.leader();
    } else {
      health.probe = NodeHealth::Probe::kFailed;
      health.error = probe.status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED
                         ? absl::StrCat("no answer within ", absl::FormatDuration(options_.timeout))
                         : absl::StrCat("code ", probe.status.error_code(), ": ",
                                        probe.status.error_message());
    }
    const NodeHealth before = health_->Record(addresses[i], health);
    LogTransition(*table, addresses[i], before, health);
  }
  probes.clear();

  ApplyLeaderProbes(*table, *health_);
  health_->Retain(table->ProbeAddresses());
  channels_->ReleaseRetired();
  absl::MutexLock lock(&mu_);
  ++rounds_;
}

void BackendProber::LogTransition(const RoutingTable& table, const std::string& address,
                                  const NodeHealth& before, const NodeHealth& after) const {
  std::string why_before, why_after;
  const bool was = ServesReplicaReads(before, options_.max_replica_lag, &why_before);
  const bool is = ServesReplicaReads(after, options_.max_replica_lag, &why_after);
  // What a line is logged for: a change of probe outcome, role, or of being
  // within the lag limit; not every change of the lag itself.
  auto state = [](const NodeHealth& h, bool usable) {
    if (!h.ok()) return std::string(h.probe == NodeHealth::Probe::kFailed ? "failed" : "unknown");
    return absl::StrCat(h.role, usable ? "" : " (skipped)");
  };
  const std::string state_before = state(before, was);
  const std::string state_after = state(after, is);
  if (state_before == state_after) return;
  std::string place = PlaceOf(table, address);
  const std::string name = place.empty()
                               ? absl::StrCat("Backend ", address)
                               : absl::StrCat("Backend ", address, " (", std::move(place), ")");
  if (!is) {
    LOG(WARNING) << name << ": skipped for replica reads: " << why_after;
  } else if (!was) {
    LOG(INFO) << name << ": serves replica reads again: " << Summary(after);
  } else if (before.ok()) {
    LOG(INFO) << name << ": " << Summary(after) << " (was role " << before.role << ")";
  } else {
    VLOG(1) << name << ": first probe: " << Summary(after);
  }
}

}  // namespace kvstore
