"""A client in another language: Python, with stubs generated from our .proto
files by grpc_python_plugin, against a local cluster started by
tools/kvcluster.py (router, three shards of two nodes, etcd mode) on free ports.

Run by ctest (tests/CMakeLists.txt) with Debian's /usr/bin/python3:
  cluster_test.py --stubs=DIR --root=REPO --bin=BUILD/bin
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import grpc

ARGS = None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout_s=10.0, interval_s=0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


class ClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        sys.path.insert(0, ARGS.stubs)
        global kv_pb2, kv_pb2_grpc, admin_pb2, admin_pb2_grpc, refl_pb2, refl_pb2_grpc
        from kvstore.v1 import admin_pb2, admin_pb2_grpc, kv_pb2, kv_pb2_grpc  # noqa
        import reflection_min_pb2 as refl_pb2  # noqa
        import reflection_min_pb2_grpc as refl_pb2_grpc  # noqa

        cls.tmp = tempfile.TemporaryDirectory(prefix="kvstore-pytest-")
        d = cls.tmp.name
        cls.router = f"127.0.0.1:{free_port()}"
        shards = []
        cls.nodes = [cls.router]
        for i in range(3):
            leader = f"127.0.0.1:{free_port()}"
            replica = f"127.0.0.1:{free_port()}"
            shards.append(f"  - name: shard-{i}\n    leader: {leader}\n    replicas: [{replica}]\n")
            cls.nodes += [leader, replica]
        with open(os.path.join(d, "topology.yaml"), "w") as f:
            f.write("vnodes: 1024\nshards:\n" + "".join(shards))
        cls.config = os.path.join(d, "cluster.yaml")
        with open(cls.config, "w") as f:
            f.write(f"router:\n  listen: {cls.router}\ntopology: topology.yaml\n"
                    f"data_dir: {d}/data\nnode_flags:\n  fsync: everysec\n")
        cls.kvcluster = [sys.executable, os.path.join(ARGS.root, "tools", "kvcluster.py")]
        up = subprocess.run(cls.kvcluster + ["up", "--detach", "--config", cls.config],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=120)
        if up.returncode != 0:
            raise AssertionError(f"kvcluster up failed:\n{up.stdout}")
        cls.channel = grpc.insecure_channel(cls.router)
        cls.kv = kv_pb2_grpc.KeyValueStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        down = subprocess.run(cls.kvcluster + ["down", "--config", cls.config],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=120)
        cls.channel.close()
        cls.tmp.cleanup()
        if down.returncode != 0:
            raise AssertionError(f"kvcluster down failed:\n{down.stdout}")

    def test_round_trip_through_the_router(self):
        set_reply = self.kv.Set(kv_pb2.SetRequest(key=b"py:greeting", value=b"hello \x00 bytes"),
                                timeout=5)
        self.assertGreater(set_reply.version, 0)
        got = self.kv.Get(kv_pb2.GetRequest(key=b"py:greeting"), timeout=5)
        self.assertTrue(got.found)
        self.assertEqual(got.value, b"hello \x00 bytes")
        self.assertEqual(got.version, set_reply.version)
        missing = self.kv.Get(kv_pb2.GetRequest(key=b"py:missing"), timeout=5)
        self.assertFalse(missing.found)
        deleted = self.kv.Delete(kv_pb2.DeleteRequest(key=b"py:greeting"), timeout=5)
        self.assertTrue(deleted.deleted)
        self.assertFalse(self.kv.Get(kv_pb2.GetRequest(key=b"py:greeting"), timeout=5).found)

    def test_batches_keep_the_callers_order_across_shards(self):
        keys = [f"py:batch:{i}".encode() for i in range(50)]
        items = [kv_pb2.SetItem(key=k, value=k[::-1]) for k in keys]
        reply = self.kv.MultiSet(kv_pb2.MultiSetRequest(items=items), timeout=5)
        self.assertEqual(len(reply.results), len(keys))
        self.assertTrue(all(r.version > 0 and not r.HasField("error") for r in reply.results))
        got = self.kv.MultiGet(kv_pb2.MultiGetRequest(keys=list(reversed(keys))), timeout=5)
        self.assertEqual([r.value for r in got.results], [k[::-1] for k in reversed(keys)])

    def test_pipeline_answers_every_request_by_id(self):
        # A generator of messages is all a Python client needs for the stream;
        # here 50 messages of 10 requests, then one of two.
        def messages():
            for m in range(50):
                batch = []
                for i in range(m * 10, m * 10 + 10):
                    key = f"py:pipe:{i}".encode()
                    batch.append(kv_pb2.PipelineRequest(
                        id=i, set=kv_pb2.SetRequest(key=key, value=key)))
                yield kv_pb2.PipelineRequests(requests=batch)
            yield kv_pb2.PipelineRequests(requests=[
                kv_pb2.PipelineRequest(id=1000, get=kv_pb2.GetRequest(key=b"")),
                kv_pb2.PipelineRequest(id=1001, multi_get=kv_pb2.MultiGetRequest(
                    keys=[b"py:pipe:3", b"py:pipe:4"]))])

        answers = {}
        for message in self.kv.Pipeline(messages(), timeout=30):
            for answer in message.responses:
                self.assertNotIn(answer.id, answers)
                answers[answer.id] = answer
        self.assertEqual(len(answers), 502)
        for i in range(500):
            self.assertEqual(answers[i].status.code, 0, answers[i].status.message)
            self.assertGreater(answers[i].set.version, 0)
        self.assertEqual(answers[1000].status.code, grpc.StatusCode.INVALID_ARGUMENT.value[0])
        self.assertEqual(answers[1000].status.message, "key is empty")
        # The multi_get may have raced the sets of its keys: only what it found is checked.
        for r, key in zip(answers[1001].multi_get.results, [b"py:pipe:3", b"py:pipe:4"]):
            if r.found:
                self.assertEqual(r.value, key)
        got = self.kv.Get(kv_pb2.GetRequest(key=b"py:pipe:499"), timeout=5)
        self.assertEqual(got.value, b"py:pipe:499")

    def test_compare_and_set_mismatch_is_failed_precondition(self):
        first = self.kv.Set(kv_pb2.SetRequest(key=b"py:cas", value=b"1", if_version=0), timeout=5)
        with self.assertRaises(grpc.RpcError) as caught:
            self.kv.Set(kv_pb2.SetRequest(key=b"py:cas", value=b"2", if_version=0), timeout=5)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn(str(first.version), caught.exception.details())
        with self.assertRaises(grpc.RpcError) as empty:
            self.kv.Set(kv_pb2.SetRequest(key=b"", value=b"x"), timeout=5)
        self.assertEqual(empty.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_replica_reads_eventually_see_a_write(self):
        self.kv.Set(kv_pb2.SetRequest(key=b"py:stale", value=b"fresh"), timeout=5)
        request = kv_pb2.GetRequest(key=b"py:stale", read_mode=kv_pb2.READ_MODE_ANY_REPLICA)
        self.assertTrue(wait_for(lambda: self.kv.Get(request, timeout=5).value == b"fresh"))

    def test_reflection_lists_the_api_on_every_server(self):
        for address in self.nodes:
            with grpc.insecure_channel(address) as channel:
                stub = refl_pb2_grpc.ServerReflectionStub(channel)
                replies = stub.ServerReflectionInfo(
                    iter([refl_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
                names = {s.name for r in replies for s in r.list_services_response.service}
            self.assertIn("kvstore.v1.KeyValue", names, address)
            self.assertIn("grpc.health.v1.Health", names, address)

    def test_status_reports_every_node(self):
        status = subprocess.run(self.kvcluster + ["status", "--config", self.config],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                timeout=60)
        self.assertEqual(status.returncode, 0, status.stdout)
        for address in self.nodes:
            self.assertIn(address, status.stdout)
        # etcd mode (the config names no coordination): each shard elected one
        # of its two nodes, which pushes to the other.
        for i in range(3):
            roles = []
            for address in self.nodes[1 + 2 * i:3 + 2 * i]:
                with grpc.insecure_channel(address) as channel:
                    st = admin_pb2_grpc.AdminStub(channel).Status(admin_pb2.StatusRequest(),
                                                                   timeout=5)
                roles.append(st.role)
                if st.role == "leader":
                    self.assertEqual(len(st.followers), 1)
            self.assertEqual(sorted(roles), ["leader", "replica"], f"shard-{i}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--stubs", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--bin", required=True, help="directory of kv-shard, kv-router, kvctl")
    ARGS, rest = parser.parse_known_args()
    os.environ["KVCLUSTER_BIN"] = ARGS.bin
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
