#!/usr/bin/python3
"""Unit tests of tools/kvfault/figures_table.py: the rows it makes of kvfault's
output, per run and summed per scenario (what docs/reliability.md's tables
and suite.py's soak summary are made of)."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                "tools", "kvfault"))
import figures_table  # noqa: E402


def run_output(scenario, seed, *, acked, lost, verdict="PASS", recovery=(), avail=(0, 10),
               stale_reads=0, behind_lost=None, violations="none", shards=None):
    # behind_lost None: the line as kvfault printed it before kvcheck told
    # reads behind a lost write apart.
    """kvfault's output for one run, in the format kvfault prints."""
    blocks = []
    for shard in shards or [None]:
        title = f"figures of shard {shard}" if shard else "figures"
        lines = [f"{title} (seed {seed}, 20.3s of load, check 0.01s):",
                 "  ops 100 (ok 90, fail 6, info 4), procs 20, keys 30",
                 f"  acked {acked}  lost {lost}  recovered 1  phantom 0  (acked without final read 0)",
                 f"  linearizable: 30 keys, {1 if lost else 0} invalid, 0 unknown",
                 "  replicas equal: yes",
                 "  epochs: 2 n0 40; one node per epoch: yes; stale-epoch acks 0"]
        lines += [f"  kill n0 at 5.00s: first ok write after {r:.2f}s" for r in recovery]
        lines += [f"  availability during faults: {avail[0]} of {avail[1]} writes ok (x %) in 1 window(s)",
                  f"  stale leader reads: {stale_reads}"
                  + ("" if behind_lost is None else f"; reads behind a lost write: {behind_lost}"),
                  f"  violations: {violations}"]
        blocks += lines
    blocks.append(f"{verdict} {scenario} (seed {seed})")
    return [line + "\n" for line in blocks]


class PerRunTest(unittest.TestCase):
    def test_a_run_becomes_one_row_with_its_replay_command(self):
        runs = list(figures_table.rows(run_output("kill-leader-restart", 7, acked=50, lost=0,
                                                  recovery=(1.0, 3.0))))
        self.assertEqual(len(runs), 1)
        row = figures_table.markdown(runs[0])
        self.assertIn("| `kill-leader-restart` | PASS | 7 | 100 (90/6/4) | 50 | 0 |", row)
        self.assertIn("2.00 / 3.00 s", row)
        self.assertIn("`kvfault run --scenario kill-leader-restart --seed 7`", row)

    def test_a_run_of_several_shards_sums_its_blocks(self):
        runs = list(figures_table.rows(run_output("soak-mixed", 9, acked=50, lost=1,
                                                  shards=["s0", "s1", "s2"])))
        self.assertEqual(len(runs), 1)
        self.assertEqual(runs[0]["acked"], "150")
        self.assertEqual(runs[0]["lost"], "3")
        self.assertIn("| **3** |", figures_table.markdown(runs[0]))


class PerScenarioTest(unittest.TestCase):
    def grouped(self):
        lines = (run_output("pause-leader", 1, acked=50, lost=0, recovery=(1.0,), avail=(2, 10))
                 + run_output("control-async-lost", 2, acked=70, lost=9, stale_reads=1,
                              behind_lost=4,
                              violations="lost-write: 9, double-apply: 2, stale-read: 1, "
                                         "read-behind-lost-write: 4")
                 + run_output("control-async-lost", 4, acked=70, lost=9, stale_reads=0,
                              behind_lost=5, violations="lost-write: 9, read-behind-lost-write: 5")
                 + run_output("pause-leader", 3, acked=60, lost=0, verdict="FAIL",
                              recovery=(2.0, 4.0), avail=(3, 20)))
        return figures_table.per_scenario(list(figures_table.rows(lines)))

    def test_runs_of_one_scenario_are_summed_in_order_of_first_appearance(self):
        groups = self.grouped()
        self.assertEqual([g["scenario"] for g in groups], ["pause-leader", "control-async-lost"])
        pause = groups[0]
        self.assertEqual((pause["runs"], pause["failed"], pause["seeds"]), (2, 1, ["1", "3"]))
        self.assertEqual((pause["acked"], pause["ops"], pause["avail_ok"], pause["avail_writes"]),
                         (110, 200, 5, 30))

    def test_the_row_pools_recoveries_counts_failures_and_replays_the_first_seed(self):
        row = figures_table.scenario_markdown(self.grouped()[0])
        self.assertIn("| `pause-leader` | 2 (**1**) | 1, 3 | 200 (180/12/8) | 110 | 0 |", row)
        self.assertIn("| 2.00 / 4.00 s |", row)
        self.assertIn("16.7 % (5 / 30)", row)
        self.assertIn("`kvfault run --scenario pause-leader --seed 1`", row)

    def test_losses_stale_reads_and_double_applies_are_bold(self):
        row = figures_table.scenario_markdown(self.grouped()[1])
        self.assertIn("| 140 | **18** |", row)
        # Double applies, then stale leader reads with the reads behind a lost
        # write in brackets, summed over both runs.
        self.assertIn("| **2** | **1** (9) |", row)

    def test_reads_behind_a_lost_write_alone_are_not_stale_reads(self):
        runs = list(figures_table.rows(run_output("leader-loses-tail", 5, acked=50, lost=3,
                                                  stale_reads=0, behind_lost=7)))
        self.assertIn("| 0 (7) |", figures_table.markdown(runs[0]))

    def test_a_log_from_before_the_split_keeps_the_stale_reads_alone(self):
        runs = list(figures_table.rows(run_output("leader-loses-tail", 5, acked=50, lost=3,
                                                  stale_reads=7)))
        row = figures_table.markdown(runs[0])
        self.assertIn("| **7** |", row)
        self.assertNotIn("(7)", row)


if __name__ == "__main__":
    unittest.main()
