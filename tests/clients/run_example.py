"""Runs a client example of tools/clients/ against a real local cluster.

Starts a kv-replica, a kv-shard leading it and a kv-router on free ports of
127.0.0.1 (port 0, read back from --port-file) with a temporary data
directory; runs the example twice against the router (a second run must work
on a cluster that has the first run's keys) and checks its exit code and every
line it prints (tests/clients/expected_output.txt); runs it once against an
address nothing listens on, where it must exit 1 naming UNAVAILABLE; then
stops the servers by pid.

  run_example.py --lang=python|node --root=REPO --bin=BUILD/bin

Python: stubs are generated into the temporary directory with protoc and
grpc_python_plugin, as docs/clients.md says, and the example runs with
/usr/bin/python3. Node: the npm packages pinned by
tools/clients/node/package-lock.json are installed into
${KVSTORE_CLIENTS_CACHE:-~/.cache/kvstore-clients}/node (again only when the
lock file changes), never into the repository. Exit code 77 (ctest's
SKIP_RETURN_CODE) only when node is not installed.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 15
EXAMPLE_TIMEOUT_S = 60


class Failure(Exception):
    pass


def wait_for_file(path, proc, log, timeout_s=START_TIMEOUT_S):
    """The bound address a server wrote to its --port-file, once it serves."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                return f.read().strip()
        if proc.poll() is not None:
            raise Failure(f"{proc.args[0]} exited with {proc.returncode} during start-up:\n"
                          + tail(log))
        time.sleep(0.05)
    raise Failure(f"{proc.args[0]} wrote no {path} in {timeout_s} s:\n" + tail(log))


def tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


class Cluster:
    """kv-replica, kv-shard (its leader) and kv-router, each a child we stop by pid."""

    def __init__(self, bin_dir, work):
        self.bin_dir = bin_dir
        self.work = work
        self.procs = []  # (name, Popen, log path), in start order

    def start(self, name, binary, *flags):
        port_file = os.path.join(self.work, f"{name}.port")
        log = os.path.join(self.work, f"{name}.log")
        command = [os.path.join(self.bin_dir, binary), "--listen=127.0.0.1:0",
                   f"--port-file={port_file}", *flags]
        with open(log, "wb") as out:
            try:
                # Same process group as this script: a Ctrl-C or a test timeout that
                # kills the group stops the servers too.
                proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
            except OSError as e:
                raise Failure(f"cannot start {command[0]}: {e.strerror} (is it built?)")
        self.procs.append((name, proc, log))
        return wait_for_file(port_file, proc, log)

    def up(self):
        data = os.path.join(self.work, "data")
        replica = self.start("replica", "kv-replica", f"--data-dir={data}/replica")
        leader = self.start("leader", "kv-shard", f"--data-dir={data}/leader",
                            f"--followers={replica}")
        topology = os.path.join(self.work, "topology.yaml")
        with open(topology, "w") as f:
            f.write(f"shards:\n  - name: shard-0\n    leader: {leader}\n"
                    f"    replicas: [{replica}]\n")
        self.router = self.start("router", "kv-router", f"--topology={topology}")
        return self.router

    def logs(self):
        return "".join(f"--- {name} log (last lines):\n{tail(log)}" for name, _, log in self.procs)

    def down(self):
        """SIGTERM in reverse start order (router first), SIGKILL after a grace period."""
        for name, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    print(f"run_example: {name} (pid {proc.pid}) ignored SIGTERM; killing it",
                          file=sys.stderr)
                    proc.kill()
                    proc.wait()
        self.procs = []


def python_example(root, work):
    """The command that runs the Python example, after generating its stubs."""
    stubs = os.path.join(work, "stubs")
    os.makedirs(stubs)
    plugin = shutil.which("grpc_python_plugin")
    if plugin is None:
        raise Failure("grpc_python_plugin not found (protobuf-compiler-grpc)")
    protoc = subprocess.run(["protoc", f"--proto_path={os.path.join(root, 'proto')}",
                             f"--python_out={stubs}", f"--grpc_out={stubs}",
                             f"--plugin=protoc-gen-grpc={plugin}", "kvstore/v1/kv.proto"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if protoc.returncode != 0:
        raise Failure(f"protoc failed:\n{protoc.stdout}")
    env = dict(os.environ, PYTHONPATH=stubs)
    return ["/usr/bin/python3", os.path.join(root, "tools", "clients", "python", "kv_example.py")], env


def node_example(root):
    """The command that runs the Node example, after installing its npm packages."""
    node = shutil.which("node")
    if node is None:
        print("run_example: SKIP: node is not installed (tools/install-deps installs nodejs)")
        sys.exit(SKIP)
    npm = shutil.which("npm")
    if npm is None:
        raise Failure("npm not found, but node is: run tools/install-deps")
    source = os.path.join(root, "tools", "clients", "node")
    cache = os.environ.get("KVSTORE_CLIENTS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "kvstore-clients")
    modules_dir = os.path.join(cache, "node")
    os.makedirs(modules_dir, exist_ok=True)
    lock = os.path.join(source, "package-lock.json")
    cached_lock = os.path.join(modules_dir, "package-lock.json")
    installed = os.path.join(modules_dir, "node_modules", "@grpc", "grpc-js")
    if not (os.path.isdir(installed) and same_file_contents(lock, cached_lock)):
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(os.path.join(source, name), os.path.join(modules_dir, name))
        result = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                                cwd=modules_dir, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, timeout=600)
        if result.returncode != 0:
            # A half-installed tree must not pass for a good one next time.
            os.remove(cached_lock)
            raise Failure(f"npm ci in {modules_dir} failed:\n{result.stdout}")
    env = dict(os.environ, NODE_PATH=os.path.join(modules_dir, "node_modules"))
    return [node, os.path.join(source, "kv_example.js")], env


def same_file_contents(a, b):
    try:
        with open(a, "rb") as fa, open(b, "rb") as fb:
            return fa.read() == fb.read()
    except OSError:
        return False


def expected_lines(root):
    path = os.path.join(root, "tests", "clients", "expected_output.txt")
    with open(path) as f:
        return [re.compile(line.rstrip("\n")) for line in f
                if line.strip() and not line.startswith("#")]


def check_output(stdout, patterns):
    """Every line matches its pattern; returns the named groups of all lines."""
    lines = stdout.splitlines()
    if len(lines) != len(patterns):
        raise Failure(f"expected {len(patterns)} lines of output, got {len(lines)}:\n{stdout}")
    groups = {}
    for number, (line, pattern) in enumerate(zip(lines, patterns), 1):
        match = pattern.fullmatch(line)
        if match is None:
            raise Failure(f"line {number} is\n  {line}\nwhich does not match\n  "
                          f"{pattern.pattern}\nwhole output:\n{stdout}")
        groups.update(match.groupdict())
    return groups


def check_versions(g):
    """How the versions printed must relate (design.md §2)."""
    v = {k: int(x) for k, x in g.items() if k != "cas_message"}
    checks = [
        (v["read"] == v["first"], "Get returns the version Set returned"),
        (re.search(rf"\b{v['first']}\b", g["cas_message"]) is not None,
         "the FAILED_PRECONDITION message names the current version"),
        (v["cas_if"] == v["first"], "the compare-and-set uses the version read"),
        (v["cas"] > v["first"], "the compare-and-set's version is above the key's old one"),
        (v["deleted"] > v["cas"], "the delete's version is above the last write's"),
        (v["got_a"] == v["a"] and v["got_b"] == v["b"], "MultiGet returns MultiSet's versions"),
        (v["replica_read"] == v["replicated"], "the replica read sees the replicated write"),
        (v["piped"] > v["replicated"], "a pipelined write's version is above the last write's"),
        (v["piped_a"] == v["a"], "a pipelined Get returns MultiSet's version"),
    ]
    for ok, what in checks:
        if not ok:
            raise Failure(f"versions: not true that {what}: {v}")
    return len(checks)


def run(command, env, *args):
    return subprocess.run(command + list(args), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=EXAMPLE_TIMEOUT_S)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description="Runs a tools/clients example against a "
                                     "local cluster and checks what it prints.")
    parser.add_argument("--lang", required=True, choices=["python", "node"],
                        help="which example: tools/clients/LANG")
    parser.add_argument("--root", required=True, help="the repository")
    parser.add_argument("--bin", required=True,
                        help="directory of kv-shard, kv-replica and kv-router")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix=f"kvstore-clients-{args.lang}-") as work:
        patterns = expected_lines(args.root)
        cluster = Cluster(args.bin, work)
        passed = 0
        try:
            if args.lang == "python":
                command, env = python_example(args.root, work)
            else:
                command, env = node_example(args.root)
            router = cluster.up()
            for attempt in ("first", "second"):
                result = run(command, env, "--deadline-ms=5000", router)
                if result.returncode != 0:
                    raise Failure(f"{attempt} run exited {result.returncode}:\n"
                                  f"{result.stdout}{result.stderr}")
                passed += 1
                passed += check_versions(check_output(result.stdout, patterns))
                print(f"run_example: {args.lang}: {attempt} run printed the expected "
                      f"{len(patterns)} lines")
            # Nothing listens there: the first call fails with UNAVAILABLE.
            nobody = f"127.0.0.1:{free_port()}"
            result = run(command, env, "--deadline-ms=2000", nobody)
            if result.returncode != 1 or "UNAVAILABLE" not in result.stderr:
                raise Failure(f"against {nobody} (no server) expected exit 1 and UNAVAILABLE, "
                              f"got exit {result.returncode}:\n{result.stdout}{result.stderr}")
            passed += 1
            print(f"run_example: {args.lang}: without a server: {result.stderr.strip()}")
        except Failure as e:
            print(f"run_example: {args.lang}: FAILED: {e}\n{cluster.logs()}", file=sys.stderr)
            print(f"{passed} passed, 1 failed")
            return 1
        finally:
            cluster.down()
        print(f"{passed} passed, 0 failed")
        return 0


if __name__ == "__main__":
    sys.exit(main())
