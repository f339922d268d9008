"""tools/kvcluster remove-shard: shard-1 of a running etcd-mode local cluster
gives every key to its ring neighbours (kvctl reshard remove-shard, one stage
per neighbour, docs/resharding.md); every key still reads back through the
router; the group's processes are stopped and its keys in etcd forgotten; the
next `up` on the same data dir leaves the group out.

Run by ctest (tests/CMakeLists.txt) with Debian's /usr/bin/python3:
  kvcluster_remove_shard_test.py --root=REPO --bin=BUILD/bin
Only kvctl talks to the cluster: no generated stubs needed.
"""

import argparse
import os
import sys
import time
import unittest

import kvcluster_add_shard_test as add_shard
from kvcluster_failover_test import gone, poll


class KvclusterRemoveShardTest(unittest.TestCase):
    def test_remove_shard_moves_every_key_and_retires_the_group(self):
        cluster = add_shard.Cluster()
        try:
            up = cluster.run("up", "--detach")
            self.assertEqual(up.returncode, 0, up.stdout)
            cluster.write_keys()
            group = {name: pid for name, pid in cluster.state()["pids"].items()
                     if name.startswith("shard-1/")}
            self.assertEqual(len(group), 2, group)

            # A bad --throttle: kvctl refuses, the group keeps running.
            bad = cluster.run("remove-shard", "shard-1", "--throttle", "bogus")
            self.assertEqual(bad.returncode, 2, bad.stdout)
            self.assertIn("keeps running", bad.stdout)
            self.assertTrue(all(not gone(p) for p in group.values()))

            removed = cluster.run("remove-shard", "shard-1", "--throttle", "1MiB/s", timeout=240)
            self.assertEqual(removed.returncode, 0, removed.stdout)
            self.assertIn("phase done", removed.stdout)
            self.assertIn("stage 2/2", removed.stdout)
            self.assertIn("shard shard-1 removed", removed.stdout)
            poll("shard-1's processes stopped", lambda: all(gone(p) for p in group.values()), 30)

            status = cluster.cluster_status()
            # Two stages: versions 2 (draining) and 3 (without shard-1).
            self.assertRegex(status, r"ring: version 3, vnodes 256, shards shard-0,shard-2\n",
                             status)
            self.assertNotIn("shard shard-1:", status)  # forget-shard deleted its keys.
            self.assertEqual(cluster.unreadable_keys(), [])
            procs = cluster.processes()
            self.assertFalse([n for n in procs if n.startswith("shard-1/")], procs)
            print(f"removed shard-1 of 3: {add_shard.KEYS} keys read back", flush=True)

            # up on the same data dir leaves shard-1 out.
            pids = set(cluster.state()["pids"].values())
            down = cluster.run("down", timeout=300)
            self.assertEqual(down.returncode, 0, down.stdout)
            poll("every process stopped", lambda: all(gone(p) for p in pids), 30)
            up = cluster.run("up", "--detach")
            self.assertEqual(up.returncode, 0, up.stdout)
            self.assertIn("2 shards (4 storage nodes)", up.stdout)
            self.assertNotIn("shard-1/n1", up.stdout)
            self.assertEqual(cluster.unreadable_keys(), [])
        finally:
            cluster.stop()
            leftover = [p for p in cluster.pids if not gone(p)]
            deadline = time.monotonic() + 30
            while leftover and time.monotonic() < deadline:
                time.sleep(0.1)
                leftover = [p for p in leftover if not gone(p)]
            cluster.tmp.cleanup()
        self.assertEqual(leftover, [], "processes of the test still running")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--bin", required=True, help="directory of kv-shard, kv-router, kvctl")
    add_shard.ARGS, rest = parser.parse_known_args()
    os.environ["KVCLUSTER_BIN"] = add_shard.ARGS.bin
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
