#include "tools/kvctl/reshard_commands.h"

#include <algorithm>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/config/units.h"
#include "common/coord/schema.h"
#include "common/coord/txn.h"
#include "common/topology/topology.h"
#include "nlohmann/json.hpp"
#include "tools/kvctl/reshard_status.h"

namespace kvstore::reshard {
namespace {

constexpr char kUsage[] =
    "usage: kvctl --etcd=HOST:PORT reshard add-shard|remove-shard NAME [--plan] [--force] [--yes] "
    "[--throttle=RATE] [--copy-from=leader|replica] [--cutover-max-pause=DURATION] "
    "[--handoff-lag=N] | reshard status [ID] [--watch] | reshard throttle ID RATE | "
    "reshard pause|resume|cancel ID";

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

// The id <P>/migrations/active names; nullopt when none is active.
absl::StatusOr<std::optional<std::string>> ActiveId(const ReshardIo& io) {
  absl::StatusOr<std::optional<mvccpb::KeyValue>> kv =
      ReadKey(io, coord::ActiveMigrationKey(io.prefix));
  if (!kv.ok()) return kv.status();
  if (!kv->has_value()) return std::optional<std::string>();
  absl::StatusOr<std::string> id = coord::ParseActiveMigrationValue((*kv)->value());
  if (!id.ok()) return id.status();
  return std::optional<std::string>(*id);
}

struct RecordRead {
  coord::MigrationRecord record;
  int64_t mod_revision = 0;
};

absl::Status CheckId(absl::string_view id) {
  if (id.empty() || id == "active" || absl::StrContains(id, '/')) {
    return absl::InvalidArgumentError(absl::StrCat("'", id, "' is not a migration id"));
  }
  return absl::OkStatus();
}

absl::StatusOr<RecordRead> ReadRecord(const ReshardIo& io, const std::string& id) {
  if (absl::Status s = CheckId(id); !s.ok()) return s;
  absl::StatusOr<std::optional<mvccpb::KeyValue>> kv =
      ReadKey(io, coord::MigrationKey(io.prefix, id));
  if (!kv.ok()) return kv.status();
  if (!kv->has_value()) {
    return absl::NotFoundError(absl::StrCat("no migration ", id, " under ",
                                            coord::NormalizePrefix(io.prefix), " ('kvctl ",
                                            io.etcd_flags, " reshard status' shows the newest)"));
  }
  absl::StatusOr<coord::MigrationRecord> record = coord::ParseMigrationValue((*kv)->value());
  if (!record.ok()) return record.status();
  return RecordRead{*std::move(record), (*kv)->mod_revision()};
}

// What the active migration is doing, for a refusal: "m... (add-shard s3,
// phase copy)".
std::string Describe(const ReshardIo& io, const std::string& id) {
  absl::StatusOr<RecordRead> read = ReadRecord(io, id);
  if (!read.ok()) return id;
  return absl::StrFormat("%s (%s-shard %s, phase %s)", id, read->record.kind, read->record.shard,
                         read->record.phase);
}

absl::Status RefuseActive(const ReshardIo& io, const std::string& id) {
  return absl::FailedPreconditionError(
      absl::StrCat("migration ", Describe(io, id),
                   " is active, and one migration runs at a time: follow it with 'kvctl ",
                   io.etcd_flags, " reshard status --watch'"));
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

struct Settings {
  int64_t throttle = 0;
  std::string copy_from;
  int64_t cutover_max_pause_ms = 0;
  int64_t handoff_lag = 0;
};

absl::StatusOr<Settings> CheckSettings(const ReshardFlags& flags) {
  Settings s;
  absl::StatusOr<int64_t> throttle = ParseByteRate(flags.throttle);
  if (!throttle.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--throttle: ", throttle.status().message()));
  }
  s.throttle = *throttle;
  if (flags.copy_from != "leader" && flags.copy_from != "replica") {
    return absl::InvalidArgumentError(
        absl::StrCat("--copy-from is leader or replica, not '", flags.copy_from, "'"));
  }
  s.copy_from = flags.copy_from;
  absl::Duration pause;
  if (!absl::ParseDuration(flags.cutover_max_pause, &pause) || pause < absl::Milliseconds(1) ||
      pause == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--cutover-max-pause is a duration of at least 1ms (1s, 500ms), not '",
                     flags.cutover_max_pause, "'"));
  }
  s.cutover_max_pause_ms = absl::ToInt64Milliseconds(pause);
  if (flags.handoff_lag < 0) {
    return absl::InvalidArgumentError("--handoff-lag is a number of log entries, at least 0");
  }
  s.handoff_lag = flags.handoff_lag;
  return s;
}

absl::Status AddOrRemove(ReshardKind kind, const std::vector<std::string>& args,
                         const ReshardFlags& flags, const ReshardIo& io) {
  if (args.size() != 1) {
    return Usage(absl::StrCat(KindName(kind), "-shard takes one shard NAME"));
  }
  const std::string& name = args[0];
  absl::StatusOr<Settings> settings = CheckSettings(flags);
  if (!settings.ok()) return settings.status();
  if (absl::Status s = CheckShardName(name); !s.ok()) return s;
  absl::StatusOr<RingRead> ring = ReadRing(io);
  if (!ring.ok()) return ring.status();
  absl::StatusOr<ReshardPlan> plan = PlanReshard(ring->ring, kind, name);
  if (!plan.ok()) return plan.status();

  if (!flags.plan) {
    absl::StatusOr<std::optional<std::string>> active = ActiveId(io);
    if (!active.ok()) return active.status();
    if (active->has_value()) return RefuseActive(io, **active);
    if (kind == ReshardKind::kRemove) {
      // Each stage is driven by its destination's leader: all must be up.
      for (const std::string& destination : plan->stages) {
        const std::string key = coord::ShardLeaderKey(io.prefix, destination);
        absl::StatusOr<std::optional<mvccpb::KeyValue>> leader = ReadKey(io, key);
        if (!leader.ok()) return leader.status();
        if (!leader->has_value()) {
          return absl::FailedPreconditionError(absl::StrCat(
              "shard ", destination, ", which receives ranges of ", name, ", has no leader (", key,
              " is missing): its leader drives that stage; wait until 'kvctl ", io.etcd_flags,
              " cluster status' shows one, then run this again; nothing was "
              "started"));
        }
      }
    }
    if (kind == ReshardKind::kAdd) {
      // The new shard's leader drives the migration: its group must be up.
      const std::string key = coord::ShardLeaderKey(io.prefix, name);
      absl::StatusOr<std::optional<mvccpb::KeyValue>> leader = ReadKey(io, key);
      if (!leader.ok()) return leader.status();
      if (!leader->has_value()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "shard ", name, " has no leader (", key,
            " is missing): start the new shard group first (its nodes in etcd mode with --shard=",
            name, "), wait until 'kvctl ", io.etcd_flags,
            " cluster status' shows its leader, then run this again; nothing was started"));
      }
    }
  }

  const std::vector<MoveEstimate> estimates = Estimate(io, *plan);
  const double total = plan->TotalFraction();
  const bool over = total > kMaxMovedFraction;
  nlohmann::json json = PlanJson(*plan, estimates);
  json["started"] = false;
  const auto print_json = [&] {
    if (flags.json) io.write(json.dump() + "\n");
  };
  if (!flags.json) io.write(PlanText(*plan, estimates));
  if (over && !flags.force) {
    print_json();
    return absl::FailedPreconditionError(absl::StrFormat(
        "refused: this plan moves %.2f%% of the ring, more than the limit of %.0f%%%s; --force "
        "goes ahead anyway",
        total * 100, kMaxMovedFraction * 100, flags.plan ? "" : "; nothing was started"));
  }
  if (over && !flags.json) {
    io.write(
        absl::StrFormat("warning: over the %.0f%% limit (--force)\n", kMaxMovedFraction * 100));
  }
  if (flags.plan) {
    print_json();
    return absl::OkStatus();
  }

  if (!flags.yes) {
    const std::optional<bool> yes = io.confirm(
        absl::StrFormat("start migration: %s shard %s, moving %.2f%% of the ring? [y/N] ",
                        KindName(kind), name, total * 100));
    if (!yes.has_value()) {
      print_json();
      return absl::InvalidArgumentError(
          "not on a terminal, so not asking: pass --yes to start the migration; nothing was "
          "started");
    }
    if (!*yes) {
      print_json();
      return absl::AbortedError("not confirmed; nothing was started");
    }
  }

  coord::MigrationRecord record;
  record.id = NewMigrationId(io.now(), io.random ? io.random() : std::random_device()());
  record.kind = KindName(kind);
  record.shard = name;
  record.from_version = plan->from.version;
  record.from = plan->from;
  record.to = plan->to;
  if (kind == ReshardKind::kRemove) {
    record.stages = plan->stages;
    record.stage = 0;
    record.to = plan->stage_rings[0];
  }
  record.phase = "copy";
  record.throttle_bytes_per_second = settings->throttle;
  record.copy_from = settings->copy_from;
  record.cutover_max_pause_ms = settings->cutover_max_pause_ms;
  record.handoff_lag = settings->handoff_lag;
  record.created_unix_ms = absl::ToUnixMillis(io.now());

  // One migration at a time, and only from the ring the plan was made from.
  const std::string active_key = coord::ActiveMigrationKey(io.prefix);
  const std::string ring_key = coord::RingKey(io.prefix);
  etcdserverpb::TxnRequest txn;
  *txn.add_compare() = coord::CreateRevisionIs(active_key, 0);
  *txn.add_compare() = coord::ModRevisionIs(ring_key, ring->mod_revision);
  *txn.add_success() = coord::PutOp(active_key, coord::ActiveMigrationValue(record.id));
  *txn.add_success() =
      coord::PutOp(coord::MigrationKey(io.prefix, record.id), coord::MigrationValue(record));
  *txn.add_failure() = coord::RangeOp(active_key);
  *txn.add_failure() = coord::RangeOp(ring_key);
  absl::StatusOr<etcdserverpb::TxnResponse> response = io.etcd->Txn(txn);
  if (!response.ok()) {
    print_json();
    return absl::Status(response.status().code(),
                        absl::StrCat(response.status().message(), "; migration ", record.id,
                                     " may or may not have been started: see 'kvctl ",
                                     io.etcd_flags, " reshard status'"));
  }
  // The client retries a call whose answer was lost: a retry that finds our
  // own id active means the first attempt was applied.
  bool started = response->succeeded();
  std::optional<std::string> active_now;
  if (!started && response->responses_size() == 2 &&
      response->responses(0).response_range().kvs_size() > 0) {
    const std::string& value = response->responses(0).response_range().kvs(0).value();
    absl::StatusOr<std::string> id = coord::ParseActiveMigrationValue(value);
    active_now = id.ok() ? *id : value;
    started = *active_now == record.id;
  }
  if (!started) {
    print_json();
    if (active_now) return RefuseActive(io, *active_now);
    absl::StatusOr<coord::RingRecord> ring_now = absl::NotFoundError("deleted");
    if (response->responses_size() == 2 && response->responses(1).response_range().kvs_size() > 0) {
      ring_now = coord::ParseRingValue(response->responses(1).response_range().kvs(0).value());
    }
    return absl::FailedPreconditionError(
        absl::StrCat("the ring changed since it was read (version ", ring->ring.version, ", now ",
                     ring_now.ok() ? absl::StrCat("version ", ring_now->version)
                                   : std::string(ring_now.status().message()),
                     "); nothing was started: run the command again to plan from the new ring"));
  }
  if (flags.json) {
    json["started"] = true;
    json["id"] = record.id;
    print_json();
  } else {
    io.write(absl::StrFormat(
        "started migration %s: %s shard %s, ring version %d -> %d%s\nfollow it with: kvctl %s "
        "reshard status %s --watch\n",
        record.id, record.kind, name, record.from_version, plan->to.version,
        record.stages.empty()       ? std::string()
        : record.stages.size() == 1 ? std::string(" in 1 stage")
                                    : absl::StrFormat(" in %d stages", record.stages.size()),
        io.etcd_flags, record.id));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------- status

absl::StatusOr<MigrationView> LoadView(const ReshardIo& io, const std::string& id) {
  absl::StatusOr<RecordRead> read = ReadRecord(io, id);
  if (!read.ok()) return read.status();
  MigrationView view;
  view.record = std::move(read->record);
  absl::StatusOr<std::optional<std::string>> active = ActiveId(io);
  if (!active.ok()) return active.status();
  view.active = active->has_value() && **active == id;
  const std::string sources_prefix = coord::MigrationSourcesPrefix(io.prefix, id);
  coord::RangeOptions all;
  all.prefix = true;
  absl::StatusOr<coord::RangeResult> range = io.etcd->Range(sources_prefix, all);
  if (!range.ok()) return range.status();
  for (const mvccpb::KeyValue& kv : range->kvs) {
    const std::string source = coord::ProgressKeySource(kv.key().substr(sources_prefix.size()));
    absl::StatusOr<coord::SourceProgress> p = coord::ParseSourceProgressValue(source, kv.value());
    if (p.ok()) {
      view.sources.push_back(*std::move(p));
    } else {
      view.unreadable.emplace_back(p.status().message());
    }
  }
  return view;
}

// The active migration, else the newest recorded.
absl::StatusOr<std::string> DefaultId(const ReshardIo& io) {
  absl::StatusOr<std::optional<std::string>> active = ActiveId(io);
  if (!active.ok()) return active.status();
  if (active->has_value()) return **active;
  const std::string prefix = coord::MigrationsPrefix(io.prefix);
  coord::RangeOptions all;
  all.prefix = true;
  absl::StatusOr<coord::RangeResult> range = io.etcd->Range(prefix, all);
  if (!range.ok()) return range.status();
  std::optional<std::pair<int64_t, std::string>> newest;
  for (const mvccpb::KeyValue& kv : range->kvs) {
    const std::string id = kv.key().substr(prefix.size());
    if (id == "active" || absl::StrContains(id, '/')) continue;
    absl::StatusOr<coord::MigrationRecord> record = coord::ParseMigrationValue(kv.value());
    const std::pair<int64_t, std::string> order(record.ok() ? record->created_unix_ms : 0, id);
    if (!newest || order > *newest) newest = order;
  }
  if (!newest) {
    return absl::NotFoundError(absl::StrCat("no migration has been recorded under ",
                                            coord::NormalizePrefix(io.prefix),
                                            " ('kvctl reshard add-shard NAME' starts one)"));
  }
  return newest->second;
}

absl::Status Status(const std::vector<std::string>& args, const ReshardFlags& flags,
                    const ReshardIo& io) {
  if (args.size() > 1) return Usage("status takes at most one migration ID");
  std::string id;
  if (args.size() == 1) {
    id = args[0];
  } else {
    absl::StatusOr<std::string> found = DefaultId(io);
    if (!found.ok()) return found.status();
    id = *found;
  }
  std::string last_shown;
  while (true) {
    absl::StatusOr<MigrationView> view = LoadView(io, id);
    if (!view.ok()) return view.status();
    const absl::Time now = io.now();
    const bool finished = IsFinished(view->record.phase);
    if (!flags.watch) {
      io.write(flags.json ? StatusJson(*view, now).dump() + "\n"
                          : StatusText(*view, now, io.terminal));
      return absl::OkStatus();
    }
    // What changed since the last round: everything but the age.
    nlohmann::json json = StatusJson(*view, now);
    nlohmann::json timeless = json;
    timeless.erase("age_seconds");
    const std::string key = timeless.dump();
    if (io.terminal && !flags.json) {
      // Home, clear the screen, draw: the age ticks too.
      io.write(absl::StrCat("\033[H\033[2J", StatusText(*view, now, true),
                            finished ? "" : "(Ctrl-C stops watching; the migration goes on)\n"));
    } else if (key != last_shown) {
      // A log: each change once (JSON: one object per line).
      io.write(flags.json ? json.dump() + "\n" : StatusText(*view, now, false) + "\n");
    }
    last_shown = key;
    if (finished) {
      if (IsCancelledOrFailed(view->record.phase)) {
        return absl::AbortedError(absl::StrCat(
            "migration ", id, " ended ", view->record.phase,
            view->record.error.empty() ? std::string() : absl::StrCat(": ", view->record.error)));
      }
      return absl::OkStatus();
    }
    // A second, in steps short enough for Ctrl-C to feel immediate.
    for (int i = 0; i < 10; ++i) {
      if (io.interrupted()) return absl::CancelledError("interrupted; the migration goes on");
      io.sleep(absl::Milliseconds(100));
    }
    if (io.interrupted()) return absl::CancelledError("interrupted; the migration goes on");
  }
}

// ---------------------------------------------------------------- changes

// Reads the record, lets `change` edit it (it returns false when there is
// nothing to change, or an error to refuse), and writes it back with a Txn
// guarded by the mod revision read; a concurrent write (the driver's) makes
// it read and try again.
absl::StatusOr<std::pair<coord::MigrationRecord, bool>> UpdateRecord(
    const ReshardIo& io, const std::string& id,
    const std::function<absl::StatusOr<bool>(coord::MigrationRecord*)>& change) {
  for (int attempt = 0; attempt < kUpdateAttempts; ++attempt) {
    absl::StatusOr<RecordRead> read = ReadRecord(io, id);
    if (!read.ok()) return read.status();
    absl::StatusOr<bool> changed = change(&read->record);
    if (!changed.ok()) return changed.status();
    if (!*changed) return std::make_pair(read->record, false);
    const std::string key = coord::MigrationKey(io.prefix, id);
    etcdserverpb::TxnRequest txn;
    *txn.add_compare() = coord::ModRevisionIs(key, read->mod_revision);
    *txn.add_success() = coord::PutOp(key, coord::MigrationValue(read->record));
    absl::StatusOr<etcdserverpb::TxnResponse> response = io.etcd->Txn(txn);
    if (!response.ok()) return response.status();
    if (response->succeeded()) return std::make_pair(read->record, true);
  }
  return absl::UnavailableError(absl::StrCat("the record of migration ", id, " changed ",
                                             kUpdateAttempts,
                                             " times while kvctl wrote it; try again"));
}

absl::Status RefuseFinished(const coord::MigrationRecord& r, absl::string_view verb) {
  if (!IsFinished(r.phase)) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("migration ", r.id, " has ended (phase ", r.phase, "): nothing to ", verb));
}

absl::Status Change(const std::string& verb, const std::vector<std::string>& args,
                    const ReshardFlags& flags, const ReshardIo& io) {
  const size_t want = verb == "throttle" ? 2 : 1;
  if (args.size() != want) {
    return Usage(verb == "throttle" ? "throttle takes a migration ID and a RATE (32MiB/s)"
                                    : absl::StrCat(verb, " takes one migration ID"));
  }
  const std::string& id = args[0];
  if (absl::Status s = CheckId(id); !s.ok()) return s;
  std::string what;  // What changed, for people.
  std::function<absl::StatusOr<bool>(coord::MigrationRecord*)> change;
  if (verb == "throttle") {
    absl::StatusOr<int64_t> rate = ParseByteRate(args[1]);
    if (!rate.ok()) return rate.status();
    change = [&, rate = *rate](coord::MigrationRecord* r) -> absl::StatusOr<bool> {
      if (absl::Status s = RefuseFinished(*r, "throttle"); !s.ok()) return s;
      what = absl::StrCat("throttle ", HumanRate(static_cast<double>(r->throttle_bytes_per_second)),
                          " -> ", HumanRate(static_cast<double>(rate)));
      if (r->throttle_bytes_per_second == rate) return false;
      r->throttle_bytes_per_second = rate;
      return true;
    };
  } else if (verb == "pause" || verb == "resume") {
    const bool pause = verb == "pause";
    change = [&, pause](coord::MigrationRecord* r) -> absl::StatusOr<bool> {
      if (absl::Status s = RefuseFinished(*r, verb); !s.ok()) return s;
      what = pause ? "paused: the driver stops copying within a second, at a cursor it resumes from"
                   : "resumed";
      if (r->paused == pause) return false;
      r->paused = pause;
      return true;
    };
  } else {  // cancel
    change = [&](coord::MigrationRecord* r) -> absl::StatusOr<bool> {
      if (HasSwitched(r->phase)) {
        const std::string reverse = r->kind == "add" ? "remove-shard" : "add-shard";
        if (r->kind == "remove") {
          return absl::FailedPreconditionError(absl::StrFormat(
              "migration %s cannot be cancelled now: stage %d/%d has published ring version %d "
              "(phase %s); ask again once the next stage copies",
              r->id, r->stage + 1, r->stages.size(), r->to.version, r->phase));
        }
        return absl::FailedPreconditionError(absl::StrFormat(
            "migration %s cannot be cancelled: it has published ring version %d already (phase "
            "%s), so the keys are served by their new owners. Cancel works until the switch; to "
            "move them back, run 'kvctl reshard %s %s' once this migration is done",
            r->id, r->to.version, r->phase, reverse, r->shard));
      }
      if (r->phase == "cancelled") {
        what = "cancelled already";
        return false;
      }
      if (IsFinished(r->phase)) {
        return absl::FailedPreconditionError(
            absl::StrCat("migration ", r->id, " has ended (phase ", r->phase, ")"));
      }
      if (r->kind == "remove" && !r->stages.empty()) {
        what = absl::StrFormat(
            "cancel requested: stage %d/%d (%s -> %s) stops and its destination drops what it "
            "copied; the ring stays at version %d%s; 'kvctl reshard remove-shard %s' continues "
            "from there",
            r->stage + 1, r->stages.size(), r->shard, r->stages[r->stage], r->from_version,
            r->stage > 0
                ? absl::StrCat(", where ", r->shard, " has handed ranges to ",
                               absl::StrJoin(r->stages.begin(), r->stages.begin() + r->stage, ","))
                : std::string(),
            r->shard);
      } else {
        what =
            "cancel requested: the driver stops and puts everything back as before (the ring "
            "stays at version " +
            absl::StrCat(r->from_version) + ")";
      }
      if (r->cancel_requested) return false;
      r->cancel_requested = true;
      return true;
    };
  }
  absl::StatusOr<std::pair<coord::MigrationRecord, bool>> done = UpdateRecord(io, id, change);
  if (!done.ok()) return done.status();
  if (flags.json) {
    nlohmann::json out = nlohmann::json::parse(coord::MigrationValue(done->first));
    out["changed"] = done->second;
    io.write(out.dump() + "\n");
  } else {
    io.write(absl::StrCat("migration ", id, ": ", what, done->second ? "" : " (unchanged)", "\n"));
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
  if (command == "status") return Status(rest, flags, io);
  if (command == "throttle" || command == "pause" || command == "resume" || command == "cancel") {
    return Change(command, rest, flags, io);
  }
  return Usage(absl::StrCat("unknown reshard command '", command, "'"));
}

}  // namespace kvstore::reshard
