"""kvcluster: starts, inspects and stops a local kvstore cluster.

Called by tools/kvcluster (which installs dependencies and builds first). Reads
a cluster config (deploy/local/cluster.yaml): the router's address, a topology
file naming each shard's leader and replicas, the data directory and the flags
every storage node gets. Processes start in dependency order (replicas, then
leaders with --followers, then the router), each in its own session so that a
Ctrl-C reaches only this script, which then stops them in reverse order:
router first (no new requests), then leaders, then replicas.

State of a running cluster (pids, addresses, logs) is kept in
<data_dir>/kvcluster.json, so `status` and `down` work from another terminal.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where the binaries are: build/bin, or $KVCLUSTER_BIN (tests use their build's).
BIN = os.environ.get("KVCLUSTER_BIN") or os.path.join(ROOT, "build", "bin")
DEFAULT_CONFIG = os.path.join("deploy", "local", "cluster.yaml")
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30


class ConfigError(Exception):
    pass


def fail(message, code=1):
    print(f"kvcluster: {message}", file=sys.stderr)
    sys.exit(code)


def load_config(path, data_dir_override):
    try:
        with open(path) as f:
            config = yaml.safe_load(f) or {}
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}")
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}")
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a map at the top level")
    unknown = set(config) - {"router", "topology", "data_dir", "node_flags"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}")
    router = config.get("router") or {}
    if "listen" not in router:
        raise ConfigError(f"{path}: router.listen is required")
    if "topology" not in config:
        raise ConfigError(f"{path}: topology (a topology file) is required")
    topology_path = os.path.join(os.path.dirname(os.path.abspath(path)), config["topology"])
    try:
        with open(topology_path) as f:
            topology = yaml.safe_load(f) or {}
    except OSError as e:
        raise ConfigError(f"cannot read the topology {topology_path}: {e.strerror}")
    shards = topology.get("shards") or []
    if not shards:
        raise ConfigError(f"{topology_path}: no shards")
    data_dir = data_dir_override or config.get("data_dir") or "./data"
    node_flags = config.get("node_flags") or {}
    if not isinstance(node_flags, dict):
        raise ConfigError(f"{path}: node_flags must be a map of flag: value")
    return {
        "router": str(router["listen"]),
        "topology": topology_path,
        "shards": shards,
        "data_dir": os.path.abspath(data_dir),
        "node_flags": node_flags,
    }


def nodes_of(config):
    """Every process to start, in start order: replicas, leaders, router."""
    replicas, leaders = [], []
    for shard in config["shards"]:
        name = shard["name"]
        followers = [str(a) for a in (shard.get("replicas") or [])]
        for i, address in enumerate(followers):
            replicas.append({"name": f"{name}/replica-{i + 1}", "kind": "replica",
                             "address": address, "shard": name,
                             "data_dir": os.path.join(config["data_dir"], name, f"replica-{i + 1}")})
        leaders.append({"name": f"{name}/leader", "kind": "leader", "address": str(shard["leader"]),
                        "shard": name,
                        "data_dir": os.path.join(config["data_dir"], name, "leader"),
                        "followers": followers})
    router = {"name": "router", "kind": "router", "address": config["router"]}
    return replicas + leaders + [router]


def command_for(node, config):
    flags = [f"--{k}={v}" for k, v in config["node_flags"].items()]
    if node["kind"] == "router":
        return [os.path.join(BIN, "kv-router"), f"--listen={node['address']}",
                f"--topology={config['topology']}"]
    binary = "kv-shard" if node["kind"] == "leader" else "kv-replica"
    # --shard: a replica refuses a leader of another shard (docs/replication.md).
    cmd = [os.path.join(BIN, binary), f"--listen={node['address']}",
           f"--data-dir={node['data_dir']}", f"--shard={node['shard']}"] + flags
    if node["kind"] == "leader" and node["followers"]:
        cmd.append("--followers=" + ",".join(node["followers"]))
    return cmd


def port_free(address):
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the servers bind: a TIME_WAIT connection on the port (these ports
        # lie in Linux's ephemeral range) must not count as "in use"; a
        # listening socket still does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError:
            return False
    return True


def kvctl(address, *args, timeout_ms=1000):
    return subprocess.run([os.path.join(BIN, "kvctl"), f"--addr={address}",
                           f"--timeout_ms={timeout_ms}", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def healthy(node):
    if node["kind"] == "router":
        # A read of a key nobody has: answered (found or not) once the router and
        # the shard that owns the key are up.
        return kvctl(node["address"], "get", "kvcluster-probe").returncode in (0, 1)
    return kvctl(node["address"], "status").returncode == 0


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as gone.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def log_tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def state_path(data_dir):
    return os.path.join(data_dir, "kvcluster.json")


def read_state(data_dir):
    try:
        with open(state_path(data_dir)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def stop(nodes, quiet=False):
    """SIGTERM in reverse start order, one tier at a time, waiting for each."""
    tiers = [[n for n in nodes if n["kind"] == k] for k in ("router", "leader", "replica")]
    for tier in tiers:
        running = [n for n in tier if n.get("pid") and alive(n["pid"])]
        for n in running:
            try:
                os.kill(n["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while running and time.monotonic() < deadline:
            running = [n for n in running if alive(n["pid"])]
            if running:
                time.sleep(0.1)
        for n in running:
            print(f"kvcluster: {n['name']} (pid {n['pid']}) ignored SIGTERM for "
                  f"{STOP_TIMEOUT_S} s; killing it", file=sys.stderr)
            try:
                os.kill(n["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
    if not quiet:
        print("kvcluster: stopped")


def up(args):
    try:
        config = load_config(args.config, args.data_dir)
    except ConfigError as e:
        fail(str(e), 2)
    data_dir = config["data_dir"]
    state = read_state(data_dir)
    if state and any(alive(n["pid"]) for n in state["nodes"] if n.get("pid")):
        fail(f"a cluster is already running from {data_dir}; 'tools/kvcluster down' first")
    nodes = nodes_of(config)
    taken = [n for n in nodes if not port_free(n["address"])]
    if taken:
        fail("addresses in use: " + ", ".join(f"{n['address']} ({n['name']})" for n in taken))
    logs = os.path.join(data_dir, "logs")
    os.makedirs(logs, exist_ok=True)

    stopping = {"signal": None}

    def on_signal(signum, _frame):
        stopping["signal"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    started = []
    for i, node in enumerate(nodes):
        node["log"] = os.path.join(logs, node["name"].replace("/", "-") + ".log")
        with open(node["log"], "ab") as log:
            proc = subprocess.Popen(command_for(node, config), stdout=log, stderr=log,
                                    stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)
        node["pid"] = proc.pid
        started.append(node)
        progress = f"kvcluster: starting {i + 1}/{len(nodes)}: {node['name']} on {node['address']}"
        if sys.stderr.isatty():
            print(f"\r{progress}\x1b[K", end="", file=sys.stderr, flush=True)
        else:
            print(progress, file=sys.stderr, flush=True)
        # Storage nodes are waited for before the router starts.
        if node["kind"] == "router" or i + 1 == len(nodes) or nodes[i + 1]["kind"] == "router":
            pending = [n for n in started if "healthy" not in n]
            deadline = time.monotonic() + START_TIMEOUT_S
            while pending:
                if stopping["signal"]:
                    print(file=sys.stderr)
                    stop(started)
                    sys.exit(130)
                for n in list(pending):
                    if not alive(n["pid"]):
                        print(file=sys.stderr)
                        print(f"kvcluster: {n['name']} exited during start-up; its log "
                              f"({n['log']}):\n{log_tail(n['log'])}", file=sys.stderr)
                        stop(started, quiet=True)
                        sys.exit(1)
                    if healthy(n):
                        n["healthy"] = True
                        pending.remove(n)
                if pending and time.monotonic() > deadline:
                    print(file=sys.stderr)
                    names = ", ".join(n["name"] for n in pending)
                    print(f"kvcluster: not healthy after {START_TIMEOUT_S} s: {names}; logs in "
                          f"{logs}", file=sys.stderr)
                    stop(started, quiet=True)
                    sys.exit(1)
                if pending:
                    time.sleep(0.1)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    with open(state_path(data_dir), "w") as f:
        json.dump({"config": os.path.abspath(args.config), "nodes": started}, f, indent=1)

    router = config["router"]
    print(f"kvstore is up: kv-router on {router}, {len(config['shards'])} shards "
          f"({len(nodes) - 1} storage nodes); data and logs in {data_dir}")
    for n in started:
        print(f"  {n['name']:<20} {n['address']:<18} pid {n['pid']}")
    print(f"""
Try, in another terminal:
  build/bin/kvctl --addr={router} set greeting hello
  build/bin/kvctl --addr={router} get greeting
  build/bin/kvctl --addr={router} --read_mode=any get greeting
  tools/kvcluster status
  grpcurl -plaintext -d '{{"key":"Z3JlZXRpbmc="}}' {router} kvstore.v1.KeyValue/Get""")
    if args.detach:
        print("Detached. Stop it with: tools/kvcluster down")
        return 0
    print("Press Ctrl-C to stop.", flush=True)
    reported = set()
    while not stopping["signal"]:
        for n in started:
            if n["name"] not in reported and not alive(n["pid"]):
                reported.add(n["name"])
                print(f"kvcluster: {n['name']} (pid {n['pid']}) exited; the rest keep running. "
                      f"Its log: {n['log']}", file=sys.stderr, flush=True)
        time.sleep(0.2)
    print(f"kvcluster: signal {stopping['signal']}: stopping the router, then the leaders, "
          "then the replicas", flush=True)
    stop(started)
    try:
        os.remove(state_path(data_dir))
    except OSError:
        pass
    return 0


def state_or_fail(args):
    try:
        config = load_config(args.config, args.data_dir)
    except ConfigError as e:
        fail(str(e), 2)
    state = read_state(config["data_dir"])
    if not state:
        fail(f"no cluster running from {config['data_dir']} (no kvcluster.json)")
    return state


def status(args):
    state = state_or_fail(args)
    code = 0
    print(f"{'node':<20} {'address':<18} {'pid':>7}  state")
    for n in state["nodes"]:
        if not alive(n["pid"]):
            print(f"{n['name']:<20} {n['address']:<18} {n['pid']:>7}  exited (log: {n['log']})")
            code = 1
            continue
        if n["kind"] == "router":
            ok = healthy(n)
            print(f"{n['name']:<20} {n['address']:<18} {n['pid']:>7}  "
                  f"{'serving' if ok else 'NOT ANSWERING'}")
            code = code if ok else 1
            continue
        r = kvctl(n["address"], "status", "--json")
        if r.returncode != 0:
            print(f"{n['name']:<20} {n['address']:<18} {n['pid']:>7}  NOT ANSWERING: "
                  f"{r.stderr.strip()}")
            code = 1
            continue
        s = json.loads(r.stdout)
        line = (f"{s.get('role', '?')} epoch={s.get('epoch', 0)} "
                f"last_index={s.get('lastIndex', 0)} keys={s.get('keyCount', 0)}")
        if s.get("role") == "replica":
            line += f" lag={s.get('lagEntries', 0)} ({s.get('lagSeconds', 0):.1f} s)"
        for f in s.get("followers", []):
            line += f"\n{'':<48}follower {f['address']}: {f['state']}, lag {f.get('lagEntries', 0)}"
        print(f"{n['name']:<20} {n['address']:<18} {n['pid']:>7}  {line}")
    return code


def down(args):
    state = state_or_fail(args)
    stop(state["nodes"])
    try:
        os.remove(state_path(load_config(args.config, args.data_dir)["data_dir"]))
    except OSError:
        pass
    return 0


def main():
    parser = argparse.ArgumentParser(prog="tools/kvcluster",
                                     description="Run a kvstore cluster on this machine.")
    parser.add_argument("command", choices=["up", "status", "down"])
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"cluster config (default {DEFAULT_CONFIG})")
    parser.add_argument("--data-dir", help="override the config's data_dir")
    parser.add_argument("--detach", action="store_true",
                        help="up: return once the cluster is healthy (stop it with down)")
    args = parser.parse_args()
    cwd = os.environ.get("KVCLUSTER_CWD", os.getcwd())
    if args.config != DEFAULT_CONFIG:
        args.config = os.path.join(cwd, args.config)
    if args.data_dir:
        args.data_dir = os.path.join(cwd, args.data_dir)
    os.chdir(ROOT)
    return {"up": up, "status": status, "down": down}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
