"""tools/kvcluster in etcd mode, the out-of-the-box local cluster: it starts its
own etcd, the shards elect leaders, a leader killed by pid (from
<data_dir>/kvcluster.json) is replaced and writes through the router go on;
`down` stops everything, etcd too. With --restart a killed process comes back.

Run by ctest (tests/CMakeLists.txt) with Debian's /usr/bin/python3:
  kvcluster_failover_test.py --root=REPO --bin=BUILD/bin
Only kvctl talks to the cluster: no generated stubs needed.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

ARGS = None
# Everything waited for is bounded: the lease (2 s) + election-wait (0.5 s) +
# the router's watch make a failover take about 3 s here.
FAILOVER_DEADLINE_S = 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gone(pid):
    """Exited (a zombie nobody reaped yet counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def poll(what, predicate, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s} s: {what}")


class LocalCluster:
    """A kvcluster config on free ports in a temp dir: `shards` shards of
    `nodes` nodes each, etcd mode (the default: the config says nothing)."""

    def __init__(self, shards, nodes, extra_up_args=()):
        self.tmp = tempfile.TemporaryDirectory(prefix="kvstore-kvcluster-")
        d = self.tmp.name
        self.router = f"127.0.0.1:{free_port()}"
        lines = []
        for i in range(shards):
            addresses = [f"127.0.0.1:{free_port()}" for _ in range(nodes)]
            lines.append(f"  - name: shard-{i}\n    leader: {addresses[0]}\n"
                         f"    replicas: [{', '.join(addresses[1:])}]\n")
        self.topology = os.path.join(d, "topology.yaml")
        with open(self.topology, "w") as f:
            f.write("vnodes: 256\nshards:\n" + "".join(lines))
        self.config = os.path.join(d, "cluster.yaml")
        self.data_dir = os.path.join(d, "data")
        with open(self.config, "w") as f:
            f.write(f"router:\n  listen: {self.router}\ntopology: topology.yaml\n"
                    f"data_dir: {self.data_dir}\nnode_flags:\n  fsync: everysec\n")
        self.kvcluster = [sys.executable, os.path.join(ARGS.root, "tools", "kvcluster.py")]
        up = self.run("up", "--detach", *extra_up_args, timeout=120)
        if up.returncode != 0:
            self.tmp.cleanup()
            raise AssertionError(f"kvcluster up failed:\n{up.stdout}")
        self.up_output = up.stdout

    def run(self, *args, timeout=60):
        return subprocess.run(self.kvcluster + [args[0], "--config", self.config, *args[1:]],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout)

    def state(self):
        with open(os.path.join(self.data_dir, "kvcluster.json")) as f:
            return json.load(f)

    def processes(self):
        r = subprocess.run(self.kvcluster + ["status", "--json", "--config", self.config],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        self.last_status = r.stdout + r.stderr
        return json.loads(r.stdout)["processes"]

    def kvctl(self, *args):
        return subprocess.run([os.path.join(ARGS.bin, "kvctl"), f"--addr={self.router}",
                               "--timeout_ms=2000", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=30)

    def key_of(self, shard):
        """A key the ring gives to `shard`."""
        for i in range(1000):
            key = f"failover-key-{i}"
            r = subprocess.run([os.path.join(ARGS.bin, "kvctl"), f"--topology={self.topology}",
                                "ring", key], stdout=subprocess.PIPE, text=True, timeout=30)
            if r.returncode == 0 and r.stdout.split("\t")[1] == shard:
                return key
        raise AssertionError(f"no key of {shard} among 1000")

    def down(self):
        pids = list(self.state()["pids"].values())
        supervisor = self.state().get("supervisor")
        down = self.run("down", timeout=300)
        self.tmp.cleanup()
        return down, pids + ([supervisor] if supervisor else [])


class KvclusterEtcdModeTest(unittest.TestCase):
    def test_a_killed_leader_is_replaced_and_writes_continue(self):
        cluster = LocalCluster(shards=2, nodes=3)
        try:
            self.assertIn("etcd mode", cluster.up_output)
            state = cluster.state()
            self.assertEqual(state["mode"], "etcd")
            self.assertIn("etcd", state["pids"])
            procs = cluster.processes()
            for p in procs:
                for field in ("name", "shard", "role", "address", "pid", "epoch", "last_index"):
                    self.assertIn(field, p)
            leaders = [p for p in procs if p["shard"] == "shard-0" and p["role"] == "leader"]
            self.assertEqual(len(leaders), 1, cluster.last_status)
            old = leaders[0]
            self.assertEqual(state["pids"][old["name"]], old["pid"])

            key = cluster.key_of("shard-0")
            first = cluster.kvctl("set", key, "before")
            self.assertEqual(first.returncode, 0, first.stderr)

            os.kill(old["pid"], signal.SIGKILL)
            killed_at = time.monotonic()

            def new_leader():
                for p in cluster.processes():
                    if (p["shard"] == "shard-0" and p["role"] == "leader"
                            and p["name"] != old["name"] and p["epoch"] > old["epoch"]):
                        return p
                return None

            leader = poll("a new leader of shard-0", new_leader, FAILOVER_DEADLINE_S)
            elected_s = time.monotonic() - killed_at

            def write():
                return cluster.kvctl("set", key, "after").returncode == 0

            poll(f"a write of {key} through the router", write, FAILOVER_DEADLINE_S)
            written_s = time.monotonic() - killed_at
            got = cluster.kvctl("get", key)
            self.assertEqual(got.stdout.strip(), "after", got.stderr)
            print(f"kill -9 of {old['name']} (epoch {old['epoch']}): {leader['name']} leads "
                  f"epoch {leader['epoch']} after {elected_s:.2f} s; first write through the "
                  f"router after {written_s:.2f} s", flush=True)

            # Not restarted without --restart: the pid stays the dead one.
            self.assertEqual(cluster.state()["pids"][old["name"]], old["pid"])
            dead = [p for p in cluster.processes() if p["name"] == old["name"]][0]
            self.assertEqual(dead["role"], "exited")
            self.assertFalse(dead["alive"])
        finally:
            down, pids = cluster.down()
        self.assertEqual(down.returncode, 0, down.stdout)
        still = poll("every process stopped, etcd too", lambda: all(gone(p) for p in pids), 30)
        self.assertTrue(still)

    def test_restart_starts_a_killed_node_again(self):
        cluster = LocalCluster(shards=1, nodes=2, extra_up_args=("--restart",))
        try:
            state = cluster.state()
            self.assertTrue(state["restart"])
            supervisor = state["supervisor"]
            self.assertFalse(gone(supervisor))
            victim = "shard-0/n2"
            old_pid = state["pids"][victim]
            os.kill(old_pid, signal.SIGKILL)

            def restarted():
                pid = cluster.state()["pids"][victim]
                return pid if pid != old_pid else None

            new_pid = poll("a new pid for shard-0/n2", restarted, 15)

            def serving():
                return any(p["name"] == victim and p["pid"] == new_pid and p.get("serving")
                           for p in cluster.processes())

            poll("the restarted node serving", serving, 30)
        finally:
            down, pids = cluster.down()
        self.assertEqual(down.returncode, 0, down.stdout)
        poll("every process stopped, the supervisor too", lambda: all(gone(p) for p in pids), 30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--bin", required=True, help="directory of kv-shard, kv-router, kvctl")
    ARGS, rest = parser.parse_known_args()
    os.environ["KVCLUSTER_BIN"] = ARGS.bin
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
