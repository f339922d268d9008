// What `kvctl reshard status` shows (tools/kvctl/reshard_status.h): percent
// of the estimate, ETA, catch-up lag, the progress bar on a terminal only,
// the phases that end a --watch, and the JSON object.
#include "tools/kvctl/reshard_status.h"

#include <string>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvstore::reshard {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const absl::Time kCreated = absl::FromUnixSeconds(1796296933);

MigrationView AView() {
  MigrationView view;
  view.active = true;
  coord::MigrationRecord& r = view.record;
  r.id = "m20261203T112213Z-0ce9ce";
  r.kind = "add";
  r.shard = "shard-3";
  r.from_version = 1;
  r.to.version = 2;
  r.to.vnodes = 1024;
  r.to.shards = {"shard-0", "shard-1", "shard-2", "shard-3"};
  r.phase = "copy";
  r.throttle_bytes_per_second = 8 << 20;
  r.created_unix_ms = absl::ToUnixMillis(kCreated);
  coord::SourceProgress copying;
  copying.source = "shard-0";
  copying.destination = "shard-3";
  copying.phase = "copy";
  copying.keys_copied = 250;
  copying.keys_estimate = 1000;
  copying.bytes_copied = 1 << 20;
  copying.bytes_estimate = 4 << 20;
  copying.rate_bytes_per_second = 1 << 20;
  copying.source_index = 900;  // No catch-up yet: no lag to show.
  coord::SourceProgress catching_up;
  catching_up.source = "shard-1";
  catching_up.destination = "shard-3";
  catching_up.phase = "catchup";
  catching_up.keys_copied = 990;
  catching_up.keys_estimate = 1000;
  catching_up.bytes_copied = 4 << 20;
  catching_up.bytes_estimate = 4 << 20;
  catching_up.source_index = 1500;
  catching_up.applied_index = 1380;
  catching_up.last_cutover_pause_ms = 420;
  catching_up.retries = 1;
  catching_up.restarts = 2;
  catching_up.error = "cutover not committed within 1s";
  view.sources = {copying, catching_up};
  return view;
}

TEST(ReshardStatusTest, PercentIsOfTheEstimateAndFullPastTheCopy) {
  coord::SourceProgress p;
  p.phase = "copy";
  EXPECT_FALSE(CopiedPercent(p).has_value());  // No estimate yet.
  p.keys_estimate = 200;
  p.keys_copied = 50;
  EXPECT_DOUBLE_EQ(*CopiedPercent(p), 25.0);  // Keys when bytes are unknown.
  p.bytes_estimate = 1000;
  p.bytes_copied = 100;
  EXPECT_DOUBLE_EQ(*CopiedPercent(p), 10.0);  // Bytes when known.
  p.bytes_copied = 1500;                      // Keys written meanwhile.
  EXPECT_DOUBLE_EQ(*CopiedPercent(p), 100.0);
  p.bytes_copied = 10;
  p.phase = "fenced";
  EXPECT_DOUBLE_EQ(*CopiedPercent(p), 100.0);
}

TEST(ReshardStatusTest, EtaIsTheBytesLeftOverTheRateWhileCopying) {
  coord::SourceProgress p;
  p.phase = "copy";
  p.bytes_estimate = 10 << 20;
  p.bytes_copied = 4 << 20;
  EXPECT_FALSE(CopyEta(p).has_value());  // No rate yet.
  p.rate_bytes_per_second = 2 << 20;
  EXPECT_EQ(*CopyEta(p), absl::Seconds(3));
  p.rate_bytes_per_second = 4 << 20;
  EXPECT_EQ(*CopyEta(p), absl::Seconds(2));  // 1.5 s, rounded up.
  p.phase = "catchup";
  EXPECT_FALSE(CopyEta(p).has_value());
}

TEST(ReshardStatusTest, PhasesThatEndAWatchAndThatForbidCancel) {
  for (const char* phase : {"done", "cancelled", "failed"}) EXPECT_TRUE(IsFinished(phase));
  for (const char* phase : {"copy", "catchup", "cutover", "switched", "cleanup"}) {
    EXPECT_FALSE(IsFinished(phase)) << phase;
  }
  EXPECT_TRUE(IsCancelledOrFailed("cancelled"));
  EXPECT_FALSE(IsCancelledOrFailed("done"));
  for (const char* phase : {"switched", "cleanup", "done"}) EXPECT_TRUE(HasSwitched(phase));
  for (const char* phase : {"copy", "catchup", "cutover", "cancelled"}) {
    EXPECT_FALSE(HasSwitched(phase)) << phase;
  }
}

TEST(ReshardStatusTest, TextShowsEverySourcesProgressAndABarOnlyOnATerminal) {
  MigrationView view = AView();
  const absl::Time now = kCreated + absl::Seconds(192);
  const std::string plain = StatusText(view, now, /*terminal=*/false);
  EXPECT_THAT(plain, HasSubstr("migration m20261203T112213Z-0ce9ce (active): add-shard shard-3, "
                               "ring version 1 -> 2"));
  EXPECT_THAT(plain, HasSubstr("phase copy, throttle 8.0 MiB/s, copy from leader"));
  EXPECT_THAT(plain, HasSubstr("age 3m12s"));
  EXPECT_THAT(plain, HasSubstr("source shard-0 -> shard-3: copy   25.0%"));
  EXPECT_THAT(plain, HasSubstr("keys 250 of ~1000, bytes 1.0 MiB of ~4.0 MiB, rate 1.0 MiB/s, "
                               "ETA 3s"));
  EXPECT_THAT(plain, HasSubstr("catch-up lag -, fence index -"));
  EXPECT_THAT(plain, HasSubstr("source shard-1 -> shard-3: catchup  100.0%"));
  EXPECT_THAT(plain, HasSubstr("catch-up lag 120 entries, fence index -, last cutover pause "
                               "420ms, retries 1, restarts 2"));
  EXPECT_THAT(plain, HasSubstr("error: cutover not committed within 1s"));
  EXPECT_THAT(plain, HasSubstr("total"));
  EXPECT_THAT(plain, Not(HasSubstr("[#")));
  const std::string terminal = StatusText(view, now, /*terminal=*/true);
  EXPECT_THAT(terminal, HasSubstr("25.0%  [########----------------------]"));
  EXPECT_THAT(terminal, HasSubstr("100.0%  [##############################]"));

  view.record.paused = true;
  view.record.cancel_requested = true;
  view.record.error = "source shard-0: leader changed";
  const std::string flagged = StatusText(view, now, false);
  EXPECT_THAT(flagged, HasSubstr("PAUSED"));
  EXPECT_THAT(flagged, HasSubstr("kvctl reshard resume m20261203T112213Z-0ce9ce"));
  EXPECT_THAT(flagged, HasSubstr("CANCEL REQUESTED"));
  EXPECT_THAT(flagged, HasSubstr("error: source shard-0: leader changed"));

  view.sources.clear();
  view.unreadable = {"progress of source shard-2: \"x\" is not a SourceProgress"};
  EXPECT_THAT(StatusText(view, now, false), HasSubstr("source shard-2: \"x\" is not"));
  view.unreadable.clear();
  EXPECT_THAT(StatusText(view, now, false), HasSubstr("no source has reported progress yet"));
}

TEST(ReshardStatusTest, ARemovalShowsOneRowPerStageInStageOrderAndTotals) {
  MigrationView view;
  view.active = true;
  coord::MigrationRecord& r = view.record;
  r.id = "m1";
  r.kind = "remove";
  r.shard = "s1";
  r.from_version = 3;
  r.to.version = 4;
  r.stages = {"s0", "s2", "s3"};
  r.stage = 1;
  r.phase = "copy";
  r.created_unix_ms = absl::ToUnixMillis(kCreated);
  coord::SourceProgress second;
  second.source = "s1";
  second.destination = "s2";
  second.phase = "copy";
  second.keys_copied = 100;
  second.bytes_copied = 1000;
  coord::SourceProgress first = second;
  first.destination = "s0";
  first.phase = "done";
  first.keys_copied = 300;
  first.bytes_copied = 3000;
  first.keys_cleaned = 300;
  view.sources = {second, first};  // As etcd lists them: not stage order.
  const std::string text = StatusText(view, kCreated, false);
  EXPECT_THAT(text, HasSubstr("stage 2/3: s1 -> s2 (stages: s0, s2, s3)"));
  const size_t row1 = text.find("stage 1/3: source s1 -> s0: done");
  const size_t row2 = text.find("stage 2/3: source s1 -> s2: copy");
  ASSERT_NE(row1, std::string::npos) << text;
  ASSERT_NE(row2, std::string::npos) << text;
  EXPECT_LT(row1, row2);
  EXPECT_THAT(text, HasSubstr("keys 400 of ?"));  // The total row.
  const nlohmann::json json = StatusJson(view, kCreated);
  EXPECT_EQ(json["stage"], 1);
  EXPECT_EQ(json["stages"].size(), 3u);
  EXPECT_EQ(json["sources"][0]["stage"], 1);
  EXPECT_EQ(json["sources"][1]["stage"], 2);
  EXPECT_EQ(json["totals"]["keys_copied"], 400);
  EXPECT_EQ(json["totals"]["keys_cleaned"], 300);
}

TEST(ReshardStatusTest, AFinishedMigrationSaysHowLongItTook) {
  MigrationView view = AView();
  view.active = false;
  view.record.phase = "done";
  view.record.finished_unix_ms = view.record.created_unix_ms + 125'000;
  const std::string text = StatusText(view, kCreated + absl::Hours(5), false);
  EXPECT_THAT(text, HasSubstr("migration m20261203T112213Z-0ce9ce: add-shard"));
  EXPECT_THAT(text, HasSubstr("finished 2026-12-03T11:24:18Z (took 2m5s)"));
  EXPECT_DOUBLE_EQ(StatusJson(view, kCreated + absl::Hours(5))["age_seconds"].get<double>(), 125.0);
}

TEST(ReshardStatusTest, JsonIsTheRecordAndTheSourcesWithWhatFollowsFromThem) {
  const nlohmann::json json = StatusJson(AView(), kCreated + absl::Seconds(10));
  EXPECT_EQ(json["id"], "m20261203T112213Z-0ce9ce");
  EXPECT_EQ(json["phase"], "copy");
  EXPECT_EQ(json["active"], true);
  EXPECT_EQ(json["throttle_bytes_per_second"], 8 << 20);
  EXPECT_EQ(json["paused"], false);
  EXPECT_DOUBLE_EQ(json["age_seconds"].get<double>(), 10.0);
  ASSERT_EQ(json["sources"].size(), 2u);
  const nlohmann::json& copying = json["sources"][0];
  EXPECT_EQ(copying["source"], "shard-0");
  EXPECT_DOUBLE_EQ(copying["percent"].get<double>(), 25.0);
  EXPECT_DOUBLE_EQ(copying["eta_seconds"].get<double>(), 3.0);
  EXPECT_TRUE(copying["catchup_lag"].is_null());
  const nlohmann::json& catching_up = json["sources"][1];
  EXPECT_EQ(catching_up["catchup_lag"], 120);
  EXPECT_TRUE(catching_up["eta_seconds"].is_null());
  EXPECT_EQ(catching_up["retries"], 1);
  EXPECT_EQ(catching_up["error"], "cutover not committed within 1s");
}

}  // namespace
}  // namespace kvstore::reshard
