"""tools/kvcluster add-shard: a new shard group beside a running etcd-mode local
cluster takes its share of the keys (kvctl reshard add-shard, docs/resharding.md)
while its leader shows the migration in its metrics; every key still reads back
through the router; `status` and `down` know the new processes, and the next
`up` on the same data dir starts them again.

Run by ctest (tests/CMakeLists.txt) with Debian's /usr/bin/python3:
  kvcluster_add_shard_test.py --root=REPO --bin=BUILD/bin
Only kvctl and HTTP (/metrics) talk to the cluster: no generated stubs needed.
"""

import argparse
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

from kvcluster_failover_test import gone, poll

ARGS = None
KEYS = 1200
VALUE_BYTES = 1024
# About a quarter of KEYS * VALUE_BYTES moves, some 100 KiB from each of the 3
# sources: two copy batches each (a batch is at most 64 KiB at this rate), so
# the copy lasts a few seconds, long enough to scrape the driver's metrics.
THROTTLE = "64KiB/s"

def stable_port(taken):
    """A free port below the ephemeral range: the cluster binds its addresses
    again at the second `up`, when any outgoing connection on this busy
    machine may hold a port of that range (kvcluster picks s3's ports so)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    while True:
        port = random.randrange(max(1024, low - 16384), low)
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port


def value_of(i):
    return f"v{i:04d}-" + "x" * (VALUE_BYTES - 6)


class Cluster:
    """A kvcluster config in a temp dir, on free fixed ports: 3 shards of a leader and
    one replica, etcd mode (the default), metrics on a free port per node."""

    def __init__(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="kvstore-add-shard-")
        d = self.tmp.name
        taken = set()
        self.router = f"127.0.0.1:{stable_port(taken)}"
        shards = []
        for i in range(3):
            leader, replica = (f"127.0.0.1:{stable_port(taken)}" for _ in range(2))
            shards.append(f"  - name: shard-{i}\n    leader: {leader}\n    replicas: [{replica}]\n")
        with open(os.path.join(d, "topology.yaml"), "w") as f:
            f.write("vnodes: 256\nshards:\n" + "".join(shards))
        self.config = os.path.join(d, "cluster.yaml")
        self.data_dir = os.path.join(d, "data")
        with open(self.config, "w") as f:
            f.write(f"router:\n  listen: {self.router}\ntopology: topology.yaml\n"
                    f"data_dir: {self.data_dir}\nnode_flags:\n  fsync: everysec\n"
                    "  metrics-listen: 127.0.0.1:0\n")
        self.kvcluster = [sys.executable, os.path.join(ARGS.root, "tools", "kvcluster.py")]
        self.pids = set()  # Every process any kvcluster command of the test started.

    def command(self, *args):
        return self.kvcluster + [args[0], "--config", self.config, *args[1:]]

    def run(self, *args, timeout=120):
        r = subprocess.run(self.command(*args), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=timeout)
        self.remember_pids()
        return r

    def state(self):
        try:
            with open(os.path.join(self.data_dir, "kvcluster.json")) as f:
                return json.load(f)
        except OSError:
            return None

    def remember_pids(self):
        state = self.state()
        if state:
            self.pids.update(state["pids"].values())

    def processes(self):
        r = subprocess.run(self.command("status", "--json"), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        return {p["name"]: p for p in json.loads(r.stdout)["processes"]}

    def kvctl(self, *args):
        return subprocess.run([os.path.join(ARGS.bin, "kvctl"), "--timeout_ms=5000", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=60)

    def cluster_status(self):
        r = self.kvctl(f"--etcd={self.state()['etcd']}", "cluster", "status")
        assert r.returncode == 0, r.stderr
        return r.stdout

    def write_keys(self):
        for start in range(0, KEYS, 50):
            args = []
            for i in range(start, min(start + 50, KEYS)):
                args += [f"key-{i:04d}", value_of(i)]
            r = self.kvctl(f"--addr={self.router}", "mset", *args)
            assert r.returncode == 0, r.stdout + r.stderr

    def unreadable_keys(self):
        """Keys that do not read back through the router with their value."""
        wrong = []
        for start in range(0, KEYS, 100):
            keys = [f"key-{i:04d}" for i in range(start, min(start + 100, KEYS))]
            r = self.kvctl(f"--addr={self.router}", "mget", *keys)
            got = {}
            for line in r.stdout.splitlines():
                fields = line.split("\t")
                if len(fields) == 4 and fields[1] == "OK":
                    got[fields[0]] = fields[3]
            wrong += [k for k in keys if got.get(k) != value_of(int(k[4:]))]
        return wrong

    def metrics_addresses(self, shard):
        """HOST:PORT of each node of `shard`'s /metrics, from its log."""
        found = []
        for node in ("n1", "n2"):
            try:
                with open(os.path.join(self.data_dir, "logs", f"{shard}-{node}.log")) as f:
                    m = re.findall(r"Metrics at http://([0-9.:]+)/metrics", f.read())
                if m:
                    found.append(m[-1])  # The latest start's.
            except OSError:
                pass
        return found

    def stop(self):
        if self.state():
            self.run("down", timeout=300)


def scrape(address):
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=2) as r:
            return r.read().decode()
    except OSError:
        return ""


def migration_samples(text):
    """{(name, labels): value} of the kvstore_migration_ series in a scrape."""
    samples = {}
    for line in text.splitlines():
        m = re.match(r"(kvstore_migration_\w+)\{([^}]*)\} (\S+)$", line)
        if m:
            samples[(m.group(1), m.group(2))] = float(m.group(3))
    return samples


class KvclusterAddShardTest(unittest.TestCase):
    def test_add_shard_moves_keys_and_the_group_survives_down_and_up(self):
        cluster = Cluster()
        try:
            up = cluster.run("up", "--detach")
            self.assertEqual(up.returncode, 0, up.stdout)
            cluster.write_keys()

            # A bad --throttle: the group starts, kvctl refuses the migration,
            # and add-shard again runs only the kvctl step.
            bad = cluster.run("add-shard", "s3", "--throttle", "bogus")
            self.assertEqual(bad.returncode, 2, bad.stdout)
            self.assertIn("keeps running", bad.stdout)
            self.assertIn("s3/n1", cluster.state()["pids"])

            # While it copies, the new shard's leader shows the migration.
            with open(os.path.join(cluster.tmp.name, "add-shard.out"), "w+") as out:
                add = subprocess.Popen(
                    cluster.command("add-shard", "s3", "--throttle", THROTTLE),
                    stdout=out, stderr=subprocess.STDOUT, text=True)
                try:
                    seen, leader_metrics = {}, None
                    deadline = time.monotonic() + 180
                    while add.poll() is None and time.monotonic() < deadline:
                        for address in cluster.metrics_addresses("s3"):
                            samples = migration_samples(scrape(address))
                            if samples:
                                leader_metrics = address
                                for key, value in samples.items():
                                    seen[key] = max(seen.get(key, 0), value)
                        time.sleep(0.1)
                finally:
                    if add.poll() is None:
                        add.kill()
                    add.wait()
                out.seek(0)
                output = out.read()
            cluster.remember_pids()
            self.assertEqual(add.returncode, 0, output)
            self.assertIn("running already", output)
            self.assertIn("phase done", output)
            self.assertIsNotNone(leader_metrics, "no kvstore_migration_ series on s3's nodes")
            phases = {labels for (name, labels), v in seen.items()
                      if name == "kvstore_migration_phase" and v == 1}
            self.assertTrue(any('phase="copy"' in labels for labels in phases), phases)
            for source in ("shard-0", "shard-1", "shard-2"):
                copied = [v for (name, labels), v in seen.items()
                          if name == "kvstore_migration_copied_keys_total"
                          and f'source="{source}"' in labels]
                self.assertEqual(len(copied), 1, seen)
                self.assertGreater(copied[0], 0, seen)
            copied = {re.search(r'source="([^"]+)"', labels).group(1): int(v)
                      for (name, labels), v in seen.items()
                      if name == "kvstore_migration_copied_keys_total"}
            phase_names = sorted(re.search(r'phase="(\w+)"', p).group(1) for p in phases)
            print(f"migration metrics on s3's leader: phases {phase_names}, "
                  f"keys copied {dict(sorted(copied.items()))}", flush=True)
            # Over: the series go away.
            poll("no kvstore_migration_ series once the migration is done",
                 lambda: not migration_samples(scrape(leader_metrics)), 20)

            status = cluster.cluster_status()
            self.assertRegex(status, r"ring: version 2, vnodes 256, shards s3,shard-0,shard-1,"
                                     r"shard-2\n", status)
            self.assertIn("shard s3: leader", status)
            self.assertEqual(cluster.unreadable_keys(), [])
            procs = cluster.processes()
            for name in ("s3/n1", "s3/n2"):
                self.assertIn(name, procs)
                self.assertTrue(procs[name]["alive"] and procs[name]["serving"], procs[name])
                self.assertEqual(procs[name]["shard"], "s3")
            self.assertEqual(sorted(procs[n]["role"] for n in ("s3/n1", "s3/n2")),
                             ["leader", "replica"])
            # s3 holds its share: about a quarter (256 vnodes: 21-30 %).
            s3_keys = [procs[n]["keys"] for n in ("s3/n1", "s3/n2")
                       if procs[n]["role"] == "leader"][0]
            self.assertGreater(s3_keys, KEYS * 0.15)
            self.assertLess(s3_keys, KEYS * 0.35)

            # down stops every process, the new ones too.
            pids = set(cluster.state()["pids"].values())
            self.assertEqual(len(pids), 1 + 6 + 2 + 1)  # etcd, shards, s3, router
            down = cluster.run("down", timeout=300)
            self.assertEqual(down.returncode, 0, down.stdout)
            poll("every process stopped", lambda: all(gone(p) for p in pids), 30)

            # up on the same data dir starts s3 too; the keys are still there.
            up = cluster.run("up", "--detach")
            self.assertEqual(up.returncode, 0, up.stdout)
            self.assertIn("4 shards (8 storage nodes)", up.stdout)
            self.assertIn("s3/n1", up.stdout)
            self.assertRegex(cluster.cluster_status(), r"ring: version 2, .*shards s3,")
            self.assertEqual(cluster.unreadable_keys(), [])
            procs = cluster.processes()
            self.assertTrue(all(procs[n]["alive"] for n in ("s3/n1", "s3/n2")), procs)
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
    ARGS, rest = parser.parse_known_args()
    os.environ["KVCLUSTER_BIN"] = ARGS.bin
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
