// What a scrape shows of the migration a node drives (resharding).
#include "common/metrics/migration_metrics.h"

#include "gtest/gtest.h"
#include "tests/unit/metrics/exposition_parser.h"

namespace kvstore {
namespace {

using ::kvstore::testing::ParsedScrape;
using ::kvstore::testing::ParseExposition;

ParsedScrape Scrape(const MigrationMetrics& m) {
  ExpositionWriter w;
  WriteMigrationMetrics(m, &w);
  return ParseExposition(w.Finish());
}

MigrationMetrics CatchingUp() {
  MigrationMetrics m;
  m.id = "m20261203T113214Z-23a710";
  m.phase = "catchup";
  MigrationSourceMetrics copying;
  copying.source = "s0";
  copying.keys_copied = 812;
  copying.bytes_copied = 129024;
  copying.restarts = 1;
  MigrationSourceMetrics caught_up;
  caught_up.source = "s1";
  caught_up.keys_copied = 1458;
  caught_up.bytes_copied = 230707;
  caught_up.catchup_lag_entries = 60;
  caught_up.retries = 2;
  m.sources = {copying, caught_up};
  return m;
}

TEST(MigrationMetricsTest, NodeDrivingNothingWritesNoSeries) {
  ExpositionWriter w;
  WriteMigrationMetrics(MigrationMetrics(), &w);
  EXPECT_EQ(w.Finish(), "");
}

TEST(MigrationMetricsTest, PhaseIsOneSeriesPerPhaseWithTheCurrentOneSet) {
  const ParsedScrape m = Scrape(CatchingUp());
  ASSERT_EQ(m.error, "");
  EXPECT_EQ(m.types.at("kvstore_migration_phase"), "gauge");
  EXPECT_EQ(m.Count("kvstore_migration_phase"), 7);
  EXPECT_EQ(m.Value("kvstore_migration_phase",
                    {{"migration", "m20261203T113214Z-23a710"}, {"phase", "catchup"}}),
            1);
  EXPECT_EQ(m.Value("kvstore_migration_phase", {{"phase", "copy"}}), 0);
  EXPECT_EQ(m.Value("kvstore_migration_phase", {{"phase", "cutover"}}), 0);
  EXPECT_EQ(m.Value("kvstore_migration_phase", {{"phase", "done"}}), 0);

  // A phase this build does not know still shows as the current one.
  MigrationMetrics odd = CatchingUp();
  odd.phase = "failed";
  const ParsedScrape n = Scrape(odd);
  EXPECT_EQ(n.Count("kvstore_migration_phase"), 8);
  EXPECT_EQ(n.Value("kvstore_migration_phase", {{"phase", "failed"}}), 1);
  EXPECT_EQ(n.Value("kvstore_migration_phase", {{"phase", "catchup"}}), 0);
}

TEST(MigrationMetricsTest, ProgressPerSource) {
  const ParsedScrape m = Scrape(CatchingUp());
  ASSERT_EQ(m.error, "");
  EXPECT_EQ(m.types.at("kvstore_migration_copied_keys_total"), "counter");
  EXPECT_EQ(m.types.at("kvstore_migration_copied_bytes_total"), "counter");
  EXPECT_EQ(m.types.at("kvstore_migration_catchup_lag_entries"), "gauge");
  EXPECT_EQ(m.types.at("kvstore_migration_cutover_retries_total"), "counter");
  EXPECT_EQ(m.types.at("kvstore_migration_copy_restarts_total"), "counter");
  const std::map<std::string, std::string> s0 = {{"migration", "m20261203T113214Z-23a710"},
                                                 {"source", "s0"}};
  const std::map<std::string, std::string> s1 = {{"migration", "m20261203T113214Z-23a710"},
                                                 {"source", "s1"}};
  EXPECT_EQ(m.Value("kvstore_migration_copied_keys_total", s0), 812);
  EXPECT_EQ(m.Value("kvstore_migration_copied_bytes_total", s0), 129024);
  EXPECT_EQ(m.Value("kvstore_migration_copy_restarts_total", s0), 1);
  EXPECT_EQ(m.Value("kvstore_migration_cutover_retries_total", s0), 0);
  EXPECT_EQ(m.Value("kvstore_migration_copied_keys_total", s1), 1458);
  EXPECT_EQ(m.Value("kvstore_migration_copied_bytes_total", s1), 230707);
  EXPECT_EQ(m.Value("kvstore_migration_cutover_retries_total", s1), 2);
  // The lag is known only once the catch-up has asked the source.
  EXPECT_EQ(m.Count("kvstore_migration_catchup_lag_entries"), 1);
  EXPECT_EQ(m.Value("kvstore_migration_catchup_lag_entries", s1), 60);
  // No cutover committed yet: no pause to show.
  EXPECT_EQ(m.Count("kvstore_migration_last_cutover_pause_seconds"), 0);
}

TEST(MigrationMetricsTest, CommittedCutoverShowsItsPause) {
  MigrationMetrics mm = CatchingUp();
  mm.phase = "cleanup";
  mm.last_cutover_pause_seconds = 0.184;
  const ParsedScrape m = Scrape(mm);
  ASSERT_EQ(m.error, "");
  EXPECT_EQ(m.types.at("kvstore_migration_last_cutover_pause_seconds"), "gauge");
  EXPECT_EQ(m.Value("kvstore_migration_last_cutover_pause_seconds",
                    {{"migration", "m20261203T113214Z-23a710"}}),
            0.184);
  EXPECT_EQ(m.Value("kvstore_migration_phase", {{"phase", "cleanup"}}), 1);
}

}  // namespace
}  // namespace kvstore
