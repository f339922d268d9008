#!/usr/bin/python3
"""Turns the output of kvfault runs into the figures table of docs/reliability.md.

usage: tools/kvfault/figures_table.py [--per-scenario] [LOG...]
  LOG: ctest's build/Testing/Temporary/LastTest.log after `ctest -L fault`,
  or saved `kvfault run` output; standard input when none is given.

Every run prints a "figures (seed S, ...)" block and a PASS/FAIL line; each
becomes one Markdown row: the scenario, its seed, the operations by outcome,
acknowledged / lost / recovered / phantom writes, double applies and every
violation kvcheck reported, the linearizability verdict, whether the
replicas ended equal, whether each leader epoch had one acknowledging node
(and how many writes an older epoch acknowledged after a newer one had), the
recovery time after each fault (p50 / max of
"first ok write after"), the stale leader reads and, in brackets, the
reads behind a lost write ("stale leader reads: N; reads behind a lost
write: M"; kvcheck counts a stale read whose missed writes were all lost
apart, as the loss's trace rather than a leader serving an old state),
the availability during faults (the ok share of the writes invoked in the
fault windows, from "availability during faults: OK of N writes ok"), and
the command that replays the run. A figure the log does not have (a run
printed before kvfault had it) is "n/a".

With --per-scenario it prints one row per scenario instead, summing its runs
(what suite.py prints after a soak): runs and failed runs, every seed, the
summed counts, the recovery p50 / max over all its runs' recoveries, the
summed availability, and the command that replays its first run.
"""
import re
import statistics
import sys

# A run of several shards prints one block per shard ("figures of shard s1
# (seed ..."); its row sums them.
FIGURES = re.compile(r"^figures(?: of shard \S+)? \(seed (\d+), ([\d.]+)s of load")
SUMMED = ("ops", "ok", "fail", "info", "acked", "lost", "recovered", "phantom", "keys", "invalid",
          "unknown", "stale_acks", "stale_reads", "behind_lost", "avail_ok", "avail_writes")
OPS = re.compile(r"^\s+ops (\d+) \(ok (\d+), fail (\d+), info (\d+)\)")
DURABILITY = re.compile(r"^\s+acked (\d+)\s+lost (\d+)\s+recovered (\d+)\s+phantom (\d+)")
LINEARIZABLE = re.compile(r"^\s+linearizable: (\d+) keys, (\d+) invalid, (\d+) unknown")
REPLICAS = re.compile(r"^\s+replicas equal: (.*)$")
RECOVERY = re.compile(r"first ok write (?:of a newer epoch )?after ([\d.]+)s")
VIOLATIONS = re.compile(r"^\s+violations: (.*)$")
EPOCHS = re.compile(r"^\s+epochs: (.*); one node per epoch: (\w+); stale-epoch acks (\d+)")
VERDICT = re.compile(r"^(PASS|FAIL) (\S+) \(seed (\d+)\)")
STALE_READS = re.compile(r"^\s+stale leader reads: (\d+)(?:; reads behind a lost write: (\d+))?")
AVAILABILITY = re.compile(r"^\s+availability during faults: (?:(\d+) of (\d+) writes ok|(no fault window))")


HEADER = ("| scenario | result | seed | ops (ok/fail/info) | acked | lost | recovered | phantom | "
          "double applies | violations | "
          "lin. keys / invalid / unknown | replicas equal | one acking node per epoch (stale-epoch acks) | "
          "recovery p50 / max | stale leader reads (reads behind a lost write) | "
          "availability during faults (ok share of writes in fault windows) | replay |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def count_kind(violations, *names):
    """How many violations of the given kinds a "violations:" line lists."""
    total = 0
    for name in names:
        for m in re.finditer(re.escape(name) + r"\D{0,3}(\d+)", violations):
            total += int(m.group(1))
    return total


def merge(run, key, value):
    """Sets a figure, or adds a later shard's block to it."""
    if value is None:
        return
    if key not in run or (key == "violations" and run[key] == "none"):
        run[key] = value
    elif key in SUMMED:
        run[key] = str(int(run[key]) + int(value))
    elif key == "violations" and value != "none":
        run[key] = f"{run[key]}; {value}"
    elif key in ("replicas", "one_node") and value != "yes":
        run[key] = value
    elif key == "epochs":
        run[key] = f"{run[key]} | {value}"


def rows(lines):
    run = None
    for line in lines:
        line = line.rstrip("\n")
        m = FIGURES.match(line)
        if m:
            if run is None:
                run = {"seed": m.group(1), "load_s": m.group(2), "recovery": [],
                       "violations": "none"}
            continue
        if run is None:
            continue
        for pattern, keys in ((OPS, ("ops", "ok", "fail", "info")),
                              (DURABILITY, ("acked", "lost", "recovered", "phantom")),
                              (LINEARIZABLE, ("keys", "invalid", "unknown")),
                              (REPLICAS, ("replicas",)),
                              (VIOLATIONS, ("violations",)),
                              (EPOCHS, ("epochs", "one_node", "stale_acks")),
                              (STALE_READS, ("stale_reads", "behind_lost")),
                              (AVAILABILITY, ("avail_ok", "avail_writes", "no_fault"))):
            m = pattern.match(line)
            if m:
                for key, value in zip(keys, m.groups()):
                    merge(run, key, value)
        for m in RECOVERY.finditer(line):
            run["recovery"].append(float(m.group(1)))
        m = VERDICT.match(line)
        if m:
            run["verdict"], run["scenario"] = m.group(1), m.group(2)
            yield run
            run = None


def availability(run):
    """"52.6 % (312 / 593)", "no fault window", or "n/a" for an older log."""
    if run.get("avail_writes") is None:
        return "no fault window" if run.get("no_fault") else "n/a"
    ok, writes = int(run["avail_ok"]), int(run["avail_writes"])
    if writes == 0:
        return "no write (0 / 0)"
    return f"{100 * ok / writes:.1f} % ({ok} / {writes})"


def markdown(run):
    v = run.get("violations", "none")
    double = 0 if v == "none" else count_kind(v, "double-apply")
    rec = run["recovery"]
    recovery = f"{statistics.median(rec):.2f} / {max(rec):.2f} s" if rec else "n/a"
    lin = f"{run.get('keys', '?')} / {run.get('invalid', '?')} / {run.get('unknown', '?')}"
    lost = run.get("lost", "?")
    if lost not in ("0", "?"):
        lost = f"**{lost}**"
    one_node = run.get("one_node", "?")
    if one_node == "no":
        one_node = "**no**"
    stale = run.get("stale_acks", "?")
    epochs = f"{one_node} ({stale if stale in ('0', '?') else f'**{stale}**'})"
    stale_reads = stale_reads_cell(run.get("stale_reads", "n/a"), run.get("behind_lost"))
    command = f"`kvfault run --scenario {run['scenario']} --seed {run['seed']}`"
    return (f"| `{run['scenario']}` | {run['verdict']} | {run['seed']} | "
            f"{run.get('ops', '?')} ({run.get('ok', '?')}/{run.get('fail', '?')}/"
            f"{run.get('info', '?')}) | {run.get('acked', '?')} | {lost} | "
            f"{run.get('recovered', '?')} | {run.get('phantom', '?')} | {double} | {v} | {lin} | "
            f"{run.get('replicas', '?')} | {epochs} | {recovery} | {stale_reads} | "
            f"{availability(run)} | {command} |")


SCENARIO_HEADER = (
    "| scenario | runs (failed) | seeds | ops (ok/fail/info) | acked | lost | recovered | phantom | "
    "double applies | stale leader reads (reads behind a lost write) | "
    "lin. keys / invalid / unknown | replicas equal | "
    "one acking node per epoch (stale-epoch acks) | recovery p50 / max | "
    "availability during faults (ok share of writes in fault windows) | replay (first run) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def per_scenario(runs):
    """Groups runs by scenario (in order of first appearance) and sums each group
    into one run-like dict: counts added, recoveries pooled, every seed kept."""
    groups = {}
    for run in runs:
        g = groups.get(run["scenario"])
        if g is None:
            g = groups[run["scenario"]] = {"scenario": run["scenario"], "runs": 0, "failed": 0,
                                           "seeds": [], "recovery": [], "double": 0,
                                           "replicas": "yes", "one_node": "yes"}
        g["runs"] += 1
        g["failed"] += run.get("verdict") != "PASS"
        g["seeds"].append(run["seed"])
        g["recovery"].extend(run["recovery"])
        v = run.get("violations", "none")
        g["double"] += 0 if v == "none" else count_kind(v, "double-apply")
        for key in SUMMED:
            if key in run:
                g[key] = g.get(key, 0) + int(run[key])
        for key in ("replicas", "one_node"):
            if run.get(key, "?") != "yes":
                g[key] = run.get(key, "?")
        g["no_fault"] = g.get("no_fault") or run.get("no_fault")
    return list(groups.values())


def bold_unless_zero(value):
    return str(value) if str(value) in ("0", "?", "n/a") else f"**{value}**"


def stale_reads_cell(stale, behind_lost):
    """"0 (338)": stale leader reads in bold unless 0, then the reads behind a
    lost write (not bold: the lost column already flags their loss); the first
    alone for a log printed before kvcheck told them apart."""
    cell = bold_unless_zero(stale)
    return cell if behind_lost is None else f"{cell} ({behind_lost})"


def scenario_markdown(g):
    rec = g["recovery"]
    recovery = f"{statistics.median(rec):.2f} / {max(rec):.2f} s" if rec else "n/a"
    avail = availability({k: g.get(k) for k in ("avail_ok", "avail_writes", "no_fault")})
    runs = f"{g['runs']} ({bold_unless_zero(g['failed'])})"
    return (f"| `{g['scenario']}` | {runs} | {', '.join(g['seeds'])} | "
            f"{g.get('ops', '?')} ({g.get('ok', '?')}/{g.get('fail', '?')}/{g.get('info', '?')}) | "
            f"{g.get('acked', '?')} | {bold_unless_zero(g.get('lost', '?'))} | "
            f"{g.get('recovered', '?')} | {bold_unless_zero(g.get('phantom', '?'))} | "
            f"{bold_unless_zero(g['double'])} | "
            f"{stale_reads_cell(g.get('stale_reads', 'n/a'), g.get('behind_lost'))} | "
            f"{g.get('keys', '?')} / {g.get('invalid', '?')} / {g.get('unknown', '?')} | "
            f"{g['replicas']} | {g['one_node']} ({bold_unless_zero(g.get('stale_acks', '?'))}) | "
            f"{recovery} | {avail} | "
            f"`kvfault run --scenario {g['scenario']} --seed {g['seeds'][0]}` |")


def main(argv):
    lines = []
    grouped = "--per-scenario" in argv
    argv = [a for a in argv if a != "--per-scenario"]
    if len(argv) > 1:
        for path in argv[1:]:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines.extend(f.readlines())
    else:
        lines = sys.stdin.readlines()
    runs = list(rows(lines))
    if grouped:
        print(SCENARIO_HEADER)
        for g in per_scenario(runs):
            print(scenario_markdown(g))
    else:
        print(HEADER)
        for run in runs:
            print(markdown(run))
    if not runs:
        print("figures_table: no kvfault run found in the input", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
