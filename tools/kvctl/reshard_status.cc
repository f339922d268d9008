#include "tools/kvctl/reshard_status.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/config/units.h"

namespace kvstore::reshard {
namespace {

constexpr int kBarWidth = 30;

// "3m12s": whole seconds are enough for people.
std::string Seconds(absl::Duration d) {
  if (d < absl::Seconds(1)) return "0s";
  return absl::FormatDuration(absl::Trunc(d, absl::Seconds(1)));
}

std::string UtcTime(int64_t unix_ms) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMillis(unix_ms), absl::UTCTimeZone());
}

bool CopyDone(absl::string_view phase) { return !phase.empty() && phase != "copy"; }

// Entries the destination has yet to apply of the source's log; nullopt
// before the source's position is known, and during the copy until the
// destination applies any.
std::optional<uint64_t> CatchupLag(const coord::SourceProgress& p) {
  if (p.source_index == 0 || (p.phase == "copy" && p.applied_index == 0)) return std::nullopt;
  return p.source_index > p.applied_index ? p.source_index - p.applied_index : 0;
}

std::string Bar(double percent) {
  const int filled =
      std::clamp(static_cast<int>(std::lround(percent / 100 * kBarWidth)), 0, kBarWidth);
  return absl::StrCat("[", std::string(filled, '#'), std::string(kBarWidth - filled, '-'), "]");
}

std::string Of(uint64_t done, uint64_t estimate, bool bytes) {
  const auto show = [bytes](uint64_t n) { return bytes ? HumanBytes(n) : absl::StrCat(n); };
  if (estimate == 0) return absl::StrCat(show(done), " of ?");
  return absl::StrCat(show(done), " of ~", show(estimate));
}

std::string Dash(const std::optional<uint64_t>& n, absl::string_view unit = "") {
  return n ? absl::StrCat(*n, unit) : std::string("-");
}

// 1-based stage of a remove's progress row (its destination's place in the
// stages); 0 for an add or a destination not among them.
size_t StageOf(const coord::MigrationRecord& r, const coord::SourceProgress& p) {
  if (r.kind != "remove") return 0;
  auto it = std::find(r.stages.begin(), r.stages.end(), p.destination);
  return it == r.stages.end() ? 0 : static_cast<size_t>(it - r.stages.begin()) + 1;
}

// The rows in stage order (a remove), else as read.
std::vector<coord::SourceProgress> Ordered(const MigrationView& view) {
  std::vector<coord::SourceProgress> rows = view.sources;
  std::stable_sort(rows.begin(), rows.end(),
                   [&](const coord::SourceProgress& a, const coord::SourceProgress& b) {
                     return StageOf(view.record, a) < StageOf(view.record, b);
                   });
  return rows;
}

}  // namespace

bool IsFinished(absl::string_view phase) { return phase == "done" || IsCancelledOrFailed(phase); }

bool IsCancelledOrFailed(absl::string_view phase) {
  return phase == "cancelled" || phase == "failed";
}

bool HasSwitched(absl::string_view phase) {
  return phase == "switched" || phase == "cleanup" || phase == "done";
}

std::optional<double> CopiedPercent(const coord::SourceProgress& p) {
  if (CopyDone(p.phase)) return 100.0;
  double percent;
  if (p.bytes_estimate > 0) {
    percent = 100.0 * static_cast<double>(p.bytes_copied) / static_cast<double>(p.bytes_estimate);
  } else if (p.keys_estimate > 0) {
    percent = 100.0 * static_cast<double>(p.keys_copied) / static_cast<double>(p.keys_estimate);
  } else {
    return std::nullopt;
  }
  return std::min(percent, 100.0);
}

std::optional<absl::Duration> CopyEta(const coord::SourceProgress& p) {
  if (CopyDone(p.phase) || p.bytes_estimate == 0 || !(p.rate_bytes_per_second > 0)) {
    return std::nullopt;
  }
  const uint64_t left = p.bytes_estimate > p.bytes_copied ? p.bytes_estimate - p.bytes_copied : 0;
  return absl::Seconds(std::ceil(static_cast<double>(left) / p.rate_bytes_per_second));
}

std::string StatusText(const MigrationView& view, absl::Time now, bool terminal) {
  const coord::MigrationRecord& r = view.record;
  std::string out = absl::StrFormat("migration %s%s: %s-shard %s, ring version %d -> %d\n", r.id,
                                    view.active ? " (active)" : "", r.kind, r.shard, r.from_version,
                                    r.to.version);
  absl::StrAppend(
      &out, absl::StrFormat(
                "  phase %s, throttle %s, copy from %s, cutover max pause %s, "
                "handoff lag %d entries\n",
                r.phase, HumanRate(static_cast<double>(r.throttle_bytes_per_second)), r.copy_from,
                absl::FormatDuration(absl::Milliseconds(r.cutover_max_pause_ms)), r.handoff_lag));
  if (r.finished_unix_ms > 0) {
    absl::StrAppend(
        &out, absl::StrFormat("  started %s, finished %s (took %s)\n", UtcTime(r.created_unix_ms),
                              UtcTime(r.finished_unix_ms),
                              Seconds(absl::Milliseconds(r.finished_unix_ms - r.created_unix_ms))));
  } else {
    absl::StrAppend(&out, absl::StrFormat("  started %s, age %s\n", UtcTime(r.created_unix_ms),
                                          Seconds(now - absl::FromUnixMillis(r.created_unix_ms))));
  }
  if (r.kind == "remove" && !r.stages.empty()) {
    absl::StrAppend(&out, absl::StrFormat("  stage %d/%d: %s -> %s (stages: %s)\n", r.stage + 1,
                                          r.stages.size(), r.shard, r.stages[r.stage],
                                          absl::StrJoin(r.stages, ", ")));
  }
  if (r.paused && !IsFinished(r.phase)) {
    absl::StrAppend(&out, "  PAUSED: nothing is copied until 'kvctl reshard resume ", r.id, "'\n");
  }
  if (r.cancel_requested && !IsFinished(r.phase)) {
    absl::StrAppend(&out, "  CANCEL REQUESTED: the driver is putting everything back as before\n");
  }
  if (!r.error.empty()) absl::StrAppend(&out, "  error: ", r.error, "\n");
  if (view.sources.empty() && view.unreadable.empty()) {
    absl::StrAppend(&out, "  no source has reported progress yet (the driver in shard ", r.shard,
                    "'s leader writes it)\n");
  }
  uint64_t keys = 0, keys_estimate = 0, bytes = 0, bytes_estimate = 0;
  double rate = 0;
  for (const coord::SourceProgress& p : Ordered(view)) {
    keys += p.keys_copied;
    keys_estimate += p.keys_estimate;
    bytes += p.bytes_copied;
    bytes_estimate += p.bytes_estimate;
    rate += p.rate_bytes_per_second;
    const std::optional<double> percent = CopiedPercent(p);
    const std::optional<absl::Duration> eta = CopyEta(p);
    std::string line = absl::StrFormat("source %s -> %s: %s", p.source, p.destination,
                                       p.phase.empty() ? "?" : p.phase);
    if (const size_t stage = StageOf(r, p); stage > 0) {
      line = absl::StrFormat("stage %d/%d: %s", stage, r.stages.size(), line);
    }
    if (percent) {
      absl::StrAppend(&line, absl::StrFormat("  %5.1f%%", *percent));
      if (terminal) absl::StrAppend(&line, "  ", Bar(*percent));
    }
    absl::StrAppend(&out, line, "\n");
    absl::StrAppend(&out, absl::StrFormat("    keys %s, bytes %s, rate %s, ETA %s\n",
                                          Of(p.keys_copied, p.keys_estimate, false),
                                          Of(p.bytes_copied, p.bytes_estimate, true),
                                          HumanRate(p.rate_bytes_per_second),
                                          eta ? Seconds(*eta) : std::string("-")));
    absl::StrAppend(
        &out,
        absl::StrFormat(
            "    catch-up lag %s, fence index %s, last cutover pause %s, retries %d, restarts %d\n",
            Dash(CatchupLag(p), " entries"),
            p.fence_index > 0 ? absl::StrCat(p.fence_index) : std::string("-"),
            p.last_cutover_pause_ms > 0
                ? absl::FormatDuration(absl::Milliseconds(p.last_cutover_pause_ms))
                : std::string("-"),
            p.retries, p.restarts));
    if (!p.error.empty()) absl::StrAppend(&out, "    error: ", p.error, "\n");
  }
  for (const std::string& u : view.unreadable) absl::StrAppend(&out, u, "\n");
  if (view.sources.size() > 1) {
    // While every source copies, the whole copy has a percent and an ETA;
    // later only the sums mean something.
    const bool all_copying =
        std::all_of(view.sources.begin(), view.sources.end(),
                    [](const coord::SourceProgress& p) { return p.phase == "copy"; });
    coord::SourceProgress all;
    all.phase = "copy";
    all.keys_copied = keys;
    all.keys_estimate = keys_estimate;
    all.bytes_copied = bytes;
    all.bytes_estimate = bytes_estimate;
    all.rate_bytes_per_second = rate;
    const std::optional<double> percent = all_copying ? CopiedPercent(all) : std::nullopt;
    const std::optional<absl::Duration> eta = all_copying ? CopyEta(all) : std::nullopt;
    std::string line = "total";
    if (percent) {
      absl::StrAppend(&line, absl::StrFormat("  %5.1f%%", *percent));
      if (terminal) absl::StrAppend(&line, "  ", Bar(*percent));
    }
    absl::StrAppend(&out, line, "\n");
    absl::StrAppend(&out,
                    absl::StrFormat("    keys %s, bytes %s, rate %s, ETA %s\n",
                                    Of(keys, keys_estimate, false), Of(bytes, bytes_estimate, true),
                                    HumanRate(rate), eta ? Seconds(*eta) : std::string("-")));
  }
  return out;
}

nlohmann::json StatusJson(const MigrationView& view, absl::Time now) {
  nlohmann::json out = nlohmann::json::parse(coord::MigrationValue(view.record));
  out["active"] = view.active;
  const absl::Time end =
      view.record.finished_unix_ms > 0 ? absl::FromUnixMillis(view.record.finished_unix_ms) : now;
  out["age_seconds"] =
      absl::ToDoubleSeconds(end - absl::FromUnixMillis(view.record.created_unix_ms));
  nlohmann::json sources = nlohmann::json::array();
  uint64_t keys = 0, bytes = 0, cleaned = 0;
  for (const coord::SourceProgress& p : Ordered(view)) {
    nlohmann::json s = nlohmann::json::parse(coord::SourceProgressValue(p));
    s["source"] = p.source;
    keys += p.keys_copied;
    bytes += p.bytes_copied;
    cleaned += p.keys_cleaned;
    if (const size_t stage = StageOf(view.record, p); stage > 0) s["stage"] = stage;
    const std::optional<double> percent = CopiedPercent(p);
    const std::optional<absl::Duration> eta = CopyEta(p);
    const std::optional<uint64_t> lag = CatchupLag(p);
    s["percent"] = percent ? nlohmann::json(*percent) : nlohmann::json(nullptr);
    s["eta_seconds"] = eta ? nlohmann::json(absl::ToDoubleSeconds(*eta)) : nlohmann::json(nullptr);
    s["catchup_lag"] = lag ? nlohmann::json(*lag) : nlohmann::json(nullptr);
    sources.push_back(s);
  }
  out["sources"] = sources;
  out["totals"] = {{"keys_copied", keys}, {"bytes_copied", bytes}, {"keys_cleaned", cleaned}};
  out["unreadable_sources"] = view.unreadable;
  return out;
}

}  // namespace kvstore::reshard
