"""Cold-start benchmark: the import time of each Lambda handler module in a fresh interpreter.

Lambda imports the handler module once per new container (its "init" phase), so that import is what
every cold start pays before the first event. The heavy clients (boto3, kubernetes, powertools) are
imported on the first invocation instead, and are not counted here.

Bytecode is compiled first, as in the deployed bundle. Each round starts, in turn, a bare interpreter
and one per handler; a handler's figure is its process time minus the bare interpreter's in the same
round, and, as a cross-check, the import statement alone timed inside the process.
Run: .venv/bin/python bench/coldstart.py [rounds]
"""

from __future__ import annotations

import compileall
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import spot_rebalancer

HANDLERS = ("spot_rebalancer.handlers.events", "spot_rebalancer.handlers.schedule")
GOAL_MS = 300
ROUNDS = 20
TOP = 8
# Timed inside the child: the import statement alone, printed in seconds.
TIMED_IMPORT = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def run(code: str) -> tuple[float, str]:
    """Wall time of a fresh interpreter running `code`, and its output."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - start, out


def import_times(code: str) -> list[tuple[str, int]]:
    """(module, self microseconds) of every import in one `-X importtime` run of `code`."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", code], check=True,
                         capture_output=True, text=True).stderr
    rows = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = line.removeprefix("import time:").split("|")
        rows.append((name.strip(), int(self_us)))
    return rows


def by_origin(rows: list[tuple[str, int]]) -> dict[str, int]:
    """Self time summed by where a module comes from: the product, the standard library, or a
    third-party package by its top-level name."""
    totals: dict[str, int] = defaultdict(int)
    for name, self_us in rows:
        top = name.split(".", 1)[0]
        origin = top if top not in sys.stdlib_module_names else "(standard library)"
        totals[origin] += self_us
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS
    compileall.compile_dir(Path(spot_rebalancer.__file__).parent, quiet=1)
    for module in HANDLERS:  # warm run: bytecode of everything it imports, and the page cache
        run(f"import {module}")

    bare: list[float] = []
    process: dict[str, list[float]] = {m: [] for m in HANDLERS}
    statement: dict[str, list[float]] = {m: [] for m in HANDLERS}
    for _ in range(rounds):
        bare_s, _ = run("pass")
        bare.append(bare_s)
        for module in HANDLERS:
            wall, out = run(TIMED_IMPORT.format(module=module))
            process[module].append(wall - bare_s)
            statement[module].append(float(out))

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:8.0f}"

    print(f"cold start: handler module import in a fresh interpreter, ms ({rounds} rounds, "
          f"Python {sys.version.split()[0]}, bytecode compiled)")
    print(f"bare interpreter start: median {statistics.median(bare) * 1000:.0f}, best {min(bare) * 1000:.0f}")
    print(f"{'':36}{'median':>8}{'best':>8}{'import alone: median':>22}{'best':>8}")
    for module in HANDLERS:
        print(f"{module:36}{ms(statistics.median(process[module]))}{ms(min(process[module]))}"
              f"{ms(statistics.median(statement[module])):>22}{ms(min(statement[module]))}")
    at_start = {name for name, _ in import_times("pass")}  # the bare interpreter's, e.g. site
    for module in HANDLERS:
        rows = [row for row in import_times(f"import {module}") if row[0] not in at_start | {module}]
        print(f"\n{module}: top self times under -X importtime (one run, which itself adds overhead), ms")
        for name, self_us in sorted(rows, key=lambda row: -row[1])[:TOP]:
            print(f"  {name:44}{self_us / 1000:6.1f}")
        # -X importtime also lists failed attempts (the standard library's `copy` tries Jython's
        # `org.python.core`): those take no time and are left out here.
        origins = [(origin, us) for origin, us in by_origin(rows).items() if us >= 500]
        print("  by origin: " + ", ".join(f"{origin} {us / 1000:.0f}" for origin, us in origins))
    worst = max(statistics.median(times) for times in process.values()) * 1000
    print(f"\ngoal: each <= {GOAL_MS} ms (median, process minus bare interpreter): "
          f"{'met' if worst <= GOAL_MS else 'missed'} (slowest {worst:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
