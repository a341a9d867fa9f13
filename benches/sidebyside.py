#!/usr/bin/env python3
"""Time commands side by side: every round runs each command once, in a shuffled order, after
the same --prepare command, so that a neighbour's load on a shared machine falls on all of them
alike (hyperfine runs all of one command's runs, then all of the next's).

    sidebyside.py --runs N [--warmup K] [--prepare CMD] [--json OUT] [--target X] \
        NAME=COMMAND NAME=COMMAND ...

The first command is the baseline. Printed per command: the median wall time and the median
CPU time (user + system of the command and its children); per other command: the ratio of the
medians and the median of the rounds' own ratios, with how many rounds were over --target.
"""

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time


def timed(command):
    """Run `command` in a shell; its wall and CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = subprocess.run(command, shell=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"sidebyside: `{command}` failed with exit code {done.returncode}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--prepare", default="true")
    ap.add_argument("--json")
    ap.add_argument("--target", type=float)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("commands", nargs="+", metavar="NAME=COMMAND")
    args = ap.parse_args()
    commands = []
    for c in args.commands:
        name, sep, command = c.partition("=")
        if not sep:
            sys.exit(f"sidebyside: {c!r} is not NAME=COMMAND")
        commands.append((name, command))
    rng = random.Random(args.seed)
    rounds = []
    for n in range(args.warmup + args.runs):
        order = list(commands)
        rng.shuffle(order)
        times = {}
        for name, command in order:
            subprocess.run(args.prepare, shell=True, check=True)
            times[name] = timed(command)
        if n >= args.warmup:
            rounds.append(times)

    base = commands[0][0]
    summary = {"runs": args.runs, "commands": {}}
    for name, command in commands:
        walls = [r[name][0] for r in rounds]
        cpus = [r[name][1] for r in rounds]
        entry = {
            "command": command,
            "wall": walls,
            "cpu": cpus,
            "median_wall": statistics.median(walls),
            "median_cpu": statistics.median(cpus),
        }
        line = f"  {name:14s} wall {entry['median_wall']:6.3f} s   cpu {entry['median_cpu']:6.3f} s"
        if name != base:
            ratios = [r[name][0] / r[base][0] for r in rounds]
            entry["ratio_of_medians"] = entry["median_wall"] / summary["commands"][base]["median_wall"]
            entry["median_ratio"] = statistics.median(ratios)
            line += (
                f"   {entry['ratio_of_medians']:.2f}x of {base} (rounds' median {entry['median_ratio']:.2f}x,"
                f" {min(ratios):.2f}-{max(ratios):.2f}"
            )
            if args.target:
                over = sum(1 for x in ratios if x > args.target)
                entry["rounds_over_target"] = over
                line += f"; {over} of {len(ratios)} rounds over {args.target}x"
            line += ")"
        summary["commands"][name] = entry
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
