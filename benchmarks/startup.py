"""How long `mixtral --help` takes: this tree against another checkout (e.g. main) and the floor (Python
starting and importing typer), in turns, in one run; the median of each.

Commands import their cores when they run, so `--help` should cost little beyond typer itself.

    python benchmarks/startup.py [--against DIR] [--repeat 10]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def seconds(command: list[str], tree: Path | None) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user and system) of one run; CPU time moves less on a busy machine."""
    env = {**os.environ, "PYTHONPATH": str(tree)} if tree else dict(os.environ)
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    # In the tree's own folder: `python -m` imports from the working directory before PYTHONPATH.
    subprocess.run(command, env=env, cwd=tree, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return time.perf_counter() - started, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="another checkout's root, e.g. a worktree of main")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    script = Path(sys.executable).with_name("mixtral")
    contenders: dict[str, tuple[list[str], Path | None]] = {
        "floor: import typer": ([sys.executable, "-c", "import typer"], None)
    }
    for label, tree in (("this tree", HERE), ("against", args.against)):
        if tree is None:
            continue
        contenders[f"{label}: python -m mixtral_cli --help"] = ([sys.executable, "-m", "mixtral_cli", "--help"], tree)
        if script.exists():
            contenders[f"{label}: mixtral --help"] = ([str(script), "--help"], tree)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for _ in range(args.repeat):  # in turns, so a busy moment of the machine falls on every contender alike
        for name, (command, tree) in contenders.items():
            runs[name].append(seconds(command, tree))
    floor = statistics.median(wall for wall, _ in runs["floor: import typer"])
    for name, times in runs.items():
        wall, cpu = statistics.median(w for w, _ in times), statistics.median(c for _, c in times)
        print(f"{name:<45} median {wall:.3f} s, CPU {cpu:.3f} s  {wall / floor:.2f}x the floor")


if __name__ == "__main__":
    main()
