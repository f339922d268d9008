#!/usr/bin/python3
"""Runs fault scenarios one after another and prints the figures table.

usage: tools/kvfault/suite.py [--profile ci|soak] [--minutes N] [--seed S]
                              [--bin-dir DIR] [--scenario-dir DIR] [--log FILE]
                              [--only NAME,NAME...]

  --profile ci    every scenario of the scenario directory once, each with a
                  fresh seed, in name order (`ctest -L fault` runs the CI
                  tier's 27 of them; see tests/CMakeLists.txt).
  --profile soak  rounds of every scenario once, each round in a random
                  order (seeded by --seed), each run with a random seed, one
                  after another until --minutes have passed (default 30);
                  by hand, not in CI. A soak of at least one round (about
                  11 minutes) runs every scenario. After the table of runs
                  it prints the same runs summed per scenario.

Each run is `kvfault run --scenario NAME --seed S`, so any row replays with
the command it prints. A scenario that needs what this machine or build
lacks (exit 77) is reported as skipped. The output of every run goes to
--log (default: suite-<time>.log in the current directory), the table of
figures to standard output (tools/kvfault/figures_table.py). Exit status: 0
when every run passed, 1 when one failed, 2 on a usage error.
"""
import argparse
import os
import random
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import figures_table  # noqa: E402  (beside this file)


def scenario_names(directory, only):
    names = sorted(f[:-5] for f in os.listdir(directory) if f.endswith(".yaml"))
    if only:
        wanted = [n for n in only.split(",") if n]
        missing = [n for n in wanted if n not in names]
        if missing:
            raise SystemExit(f"suite: no scenario {', '.join(missing)} in {directory}")
        return wanted
    return names


def run_one(args, name, seed, log):
    command = [os.path.join(args.bin_dir, "kvfault"), "run", "--scenario", name, "--seed", str(seed),
               "--bin-dir", args.bin_dir, "--scenario-dir", args.scenario_dir]
    started = time.monotonic()
    # Each scenario bounds its own load and time (duration_s, max_ops); the
    # timeout here only guards against a hung driver.
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace", timeout=600, check=False)
        output, code = done.stdout, done.returncode
    except subprocess.TimeoutExpired as e:
        output, code = (e.stdout or "") + "\nsuite: timed out after 600 s\n", 1
    log.write(f"=== {' '.join(command)} (exit {code}, {time.monotonic() - started:.1f} s)\n")
    log.write(output)
    log.flush()
    return code, output


def main():
    parser = argparse.ArgumentParser(add_help=True)
    parser.add_argument("--profile", choices=("ci", "soak"), default="ci")
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--bin-dir", default=os.path.join(ROOT, "build", "bin"))
    parser.add_argument("--scenario-dir", default=os.path.join(ROOT, "tests", "fault", "scenarios"))
    parser.add_argument("--log", default=time.strftime("suite-%Y%m%d-%H%M%S.log"))
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    if not os.access(os.path.join(args.bin_dir, "kvfault"), os.X_OK):
        print(f"suite: no kvfault in {args.bin_dir} (build it: tools/build -DKV_FAULT_CONTROLS=ON)",
              file=sys.stderr)
        return 2
    if args.minutes <= 0:
        print("suite: --minutes must be positive", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    rng = random.Random(seed)
    names = scenario_names(args.scenario_dir, args.only)
    print(f"suite: profile {args.profile}, seed {seed}, {len(names)} scenarios, log {args.log}",
          file=sys.stderr)

    outputs, failed, skipped = [], [], []
    deadline = time.monotonic() + args.minutes * 60
    with open(args.log, "w", encoding="utf-8") as log:
        i = 0
        deck = []  # Soak: what is left of this round, drawn from the end.
        while True:
            if args.profile == "ci":
                if i >= len(names):
                    break
                name = names[i]
            else:
                if time.monotonic() >= deadline:
                    break
                if not deck:
                    deck = list(names)
                    rng.shuffle(deck)
                name = deck.pop()
            run_seed = rng.randrange(1, 2**31)
            i += 1
            print(f"suite: [{i}] {name} --seed {run_seed}", file=sys.stderr)
            code, output = run_one(args, name, run_seed, log)
            if code == 77:
                skipped.append(name)
                continue
            outputs.append(output)
            if code != 0:
                failed.append(f"{name} --seed {run_seed}")

    lines = "".join(outputs).splitlines(keepends=True)
    skipped_note = f", {len(skipped)} skipped ({', '.join(sorted(set(skipped)))})" if skipped else ""
    print(f"Suite run: profile {args.profile}, seed {seed}, {len(outputs)} runs{skipped_note}.\n")
    print(figures_table.HEADER)
    acked = lost = 0
    for run in figures_table.rows(lines):
        print(figures_table.markdown(run))
        acked += int(run.get("acked", 0))
        if run["scenario"].startswith("control-"):
            continue  # The controls must lose writes; they are not the product's figure.
        lost += int(run.get("lost", 0))
    if args.profile == "soak":
        # The same runs summed per scenario (docs/reliability.md, "One 30-minute soak").
        print("\n" + figures_table.SCENARIO_HEADER)
        for group in figures_table.per_scenario(list(figures_table.rows(lines))):
            print(figures_table.scenario_markdown(group))
    print(f"\n{acked} acknowledged writes in all; {lost} lost outside the controls (the everysec "
          "and async rows may lose what their guarantee allows; docs/reliability.md).")
    if failed:
        print("FAILED: " + "; ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
