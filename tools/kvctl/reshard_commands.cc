#include "tools/kvctl/reshard_commands.h"

#include <algorithm>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/coord/schema.h"
#include "common/topology/topology.h"
#include "nlohmann/json.hpp"

namespace kvstore::reshard {
namespace {

constexpr char kUsage[] =
    "usage: kvctl --etcd=HOST:PORT reshard add-shard|remove-shard NAME --plan [--force]";

absl::Status Usage(absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(why, "\n", kUsage));
}

// One key, with its revisions; nullopt when it does not exist.
absl::StatusOr<std::optional<mvccpb::KeyValue>> ReadKey(const ReshardIo& io,
                                                        const std::string& key) {
  absl::StatusOr<coord::RangeResult> range = io.etcd->Range(key);
  if (!range.ok()) return range.status();
  if (range->kvs.empty()) return std::optional<mvccpb::KeyValue>();
  return std::optional<mvccpb::KeyValue>(range->kvs[0]);
}

struct RingRead {
  coord::RingRecord ring;
  int64_t mod_revision = 0;
};

absl::StatusOr<RingRead> ReadRing(const ReshardIo& io) {
  const std::string key = coord::RingKey(io.prefix);
  absl::StatusOr<std::optional<mvccpb::KeyValue>> kv = ReadKey(io, key);
  if (!kv.ok()) return kv.status();
  if (!kv->has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the cluster has no ring in etcd (", key, " is missing): run 'kvctl ", io.etcd_flags,
        " cluster init --config=FILE' first (on a cluster initialised before the ring was kept "
        "in etcd it adds just the ring)"));
  }
  absl::StatusOr<coord::RingRecord> ring = coord::ParseRingValue((*kv)->value());
  if (!ring.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat(key, " cannot be read: ", ring.status().message()));
  }
  return RingRead{*std::move(ring), (*kv)->mod_revision()};
}

// Each source's size from its leader, asked in parallel; a reason instead
// when the shard has no leader or it does not answer in time.
std::vector<MoveEstimate> Estimate(const ReshardIo& io, const ReshardPlan& plan) {
  std::vector<std::string> sources;
  for (const PlannedMove& m : plan.moves) {
    if (std::find(sources.begin(), sources.end(), m.from) == sources.end()) {
      sources.push_back(m.from);
    }
  }
  std::vector<absl::StatusOr<SourceSize>> sizes(sources.size(), absl::UnknownError("not asked"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < sources.size(); ++i) {
    threads.emplace_back([&io, &sources, &sizes, i] {
      const std::string key = coord::ShardLeaderKey(io.prefix, sources[i]);
      absl::StatusOr<std::optional<mvccpb::KeyValue>> kv = ReadKey(io, key);
      if (!kv.ok()) {
        sizes[i] = kv.status();
        return;
      }
      if (!kv->has_value()) {
        sizes[i] = absl::NotFoundError(absl::StrCat("no leader (", key, " is missing)"));
        return;
      }
      absl::StatusOr<coord::LeaderValueRecord> leader = coord::ParseLeaderJson((*kv)->value());
      if (!leader.ok()) {
        sizes[i] = leader.status();
        return;
      }
      absl::StatusOr<SourceSize> size = io.source_size(leader->addr, kSourceSizeTimeout);
      if (!size.ok()) {
        sizes[i] = absl::Status(
            size.status().code(),
            absl::StrFormat("its leader %s at %s did not answer (deadline %s): %s", leader->id,
                            leader->addr, absl::FormatDuration(kSourceSizeTimeout),
                            size.status().message()));
        return;
      }
      sizes[i] = *size;
    });
  }
  for (std::thread& t : threads) t.join();
  std::vector<MoveEstimate> estimates;
  for (const PlannedMove& m : plan.moves) {
    const size_t i = std::find(sources.begin(), sources.end(), m.from) - sources.begin();
    estimates.push_back(EstimateMove(m, sizes[i]));
  }
  return estimates;
}

absl::Status AddOrRemove(ReshardKind kind, const std::vector<std::string>& args,
                         const ReshardFlags& flags, const ReshardIo& io) {
  if (args.size() != 1) {
    return Usage(absl::StrCat(KindName(kind), "-shard takes one shard NAME"));
  }
  const std::string& name = args[0];
  if (!flags.plan) {
    return absl::UnimplementedError(
        "starting a migration is not wired yet: only --plan prints what would move");
  }
  if (absl::Status s = CheckShardName(name); !s.ok()) return s;
  absl::StatusOr<RingRead> ring = ReadRing(io);
  if (!ring.ok()) return ring.status();
  absl::StatusOr<ReshardPlan> plan = PlanReshard(ring->ring, kind, name);
  if (!plan.ok()) return plan.status();

  const std::vector<MoveEstimate> estimates = Estimate(io, *plan);
  const double total = plan->TotalFraction();
  const bool over = total > kMaxMovedFraction;
  if (flags.json) {
    io.write(PlanJson(*plan, estimates).dump() + "\n");
  } else {
    io.write(PlanText(*plan, estimates));
  }
  if (over && !flags.force) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "refused: this plan moves %.2f%% of the ring, more than the limit of %.0f%%; --force "
        "goes ahead anyway",
        total * 100, kMaxMovedFraction * 100));
  }
  if (over && !flags.json) {
    io.write(
        absl::StrFormat("warning: over the %.0f%% limit (--force)\n", kMaxMovedFraction * 100));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunReshard(const std::vector<std::string>& args, const ReshardFlags& flags,
                        const ReshardIo& io) {
  if (args.empty()) return Usage("reshard needs a command");
  const std::string& command = args[0];
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (command == "add-shard") return AddOrRemove(ReshardKind::kAdd, rest, flags, io);
  if (command == "remove-shard") return AddOrRemove(ReshardKind::kRemove, rest, flags, io);
  return Usage(absl::StrCat("unknown reshard command '", command, "'"));
}

}  // namespace kvstore::reshard
