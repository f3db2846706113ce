"""Planner scale: how long the planner takes on a big cluster, against parsing the same snapshot.

For each size (nodes x 30 pods) a List is generated (bench/gen.py) and every stage runs in a fresh
interpreter, so peak RSS (ru_maxrss) is that stage's alone:

- json, orjson: `loads` of the List's bytes with the garbage collector off (the reference: the least
  any Python tool pays to hold the snapshot as objects); orjson also with it on, as a tool gets it;
- read_list: the product's decode of those bytes into its typed snapshot;
- plan: the planner given that decoded snapshot (the decode before it is timed apart; the peak RSS
  is the whole process: bytes, snapshot and planning, the bytes dropped once decoded);
- client: the official kubernetes client's `ApiClient().deserialize` of a V1PodList of the first
  10,000 pods of the largest List (it is too slow for all), scaled to each size's pod count.

Goals (for 5,000 nodes / 150,000 pods): decode + plan <= 2x the faster parse (both start from the
same bytes; plan alone is shown too), peak RSS of the plan stage <= 1.5 GB, and time near linear in
pods across sizes. Nothing here asserts: it prints.

    python bench/planner.py [--sizes 500,1000,2500,5000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
from gen import NOW

PODS_PER_NODE = 30
CLIENT_SUBSET = 10_000
PLAN_GOAL_RATIO = 2.0
RSS_GOAL_MB = 1500
BENCH_DIR = Path(__file__).resolve().parent


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


# --- stages, each run alone in a fresh interpreter --------------------------------------------------


def _stage_json(data: bytes) -> dict:
    gc.disable()
    _, seconds = _timed(json.loads, data)
    return {"seconds": seconds}


def _stage_orjson(data: bytes) -> dict:
    import orjson

    gc.disable()
    _, seconds = _timed(orjson.loads, data)
    return {"seconds": seconds}


def _stage_orjson_gc_on(data: bytes) -> dict:
    import orjson

    _, seconds = _timed(orjson.loads, data)
    return {"seconds": seconds}


def _stage_read_list(data: bytes) -> dict:
    from spot_rebalancer.snapshot import read_list

    snapshot, seconds = _timed(read_list, data)
    return {"seconds": seconds, "pods": len(snapshot.pods), "nodes": len(snapshot.nodes)}


def _stage_plan(data: bytes) -> dict:
    from spot_rebalancer.config import Settings
    from spot_rebalancer.rebalance import History, plan
    from spot_rebalancer.snapshot import read_list

    snapshot, decode_seconds = _timed(read_list, data)
    del data  # a caller that planned would not keep the bytes; `_stage_main` holds no other reference
    result, seconds = _timed(plan, snapshot, Settings(), History(), NOW)
    return {"seconds": seconds, "decode_seconds": decode_seconds, "evictions": len(result.evictions),
            "skipped": len(result.skipped)}


def _stage_client(data: bytes) -> dict:
    """The official client's models for the first CLIENT_SUBSET pods; seconds and MB per 1,000 pods."""
    from kubernetes.client import ApiClient

    raw_items = msgspec.json.decode(data, type=_RawList).items
    del data
    kind_of = msgspec.json.Decoder(_Kind).decode
    pods = [bytes(raw) for raw in raw_items if kind_of(raw).kind == "Pod"][:CLIENT_SUBSET]
    del raw_items
    text = ('{"apiVersion":"v1","kind":"PodList","metadata":{},"items":['
            + b",".join(pods).decode() + "]}")
    del pods
    gc.collect()
    client = ApiClient()
    before_mb = _current_rss_mb()
    pod_list, seconds = _timed(client.deserialize, text, "V1PodList", "application/json")
    grown_mb = _current_rss_mb() - before_mb
    count = len(pod_list.items)
    return {"seconds": seconds, "pods": count, "seconds_per_1000": seconds / count * 1000,
            "mb_per_1000": grown_mb / count * 1000}


class _Kind(msgspec.Struct):
    kind: str = ""


class _RawList(msgspec.Struct):
    items: list[msgspec.Raw] = []


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * resource.getpagesize() / 2**20


STAGES = {"json": _stage_json, "orjson": _stage_orjson, "orjson_gc_on": _stage_orjson_gc_on,
          "read_list": _stage_read_list, "plan": _stage_plan, "client": _stage_client}


def _run_stage(stage: str, path: Path, repeat: int) -> dict:
    """`stage` on `path`, `repeat` times, each in a fresh interpreter: the fastest run's figures and
    peak RSS (the machine is shared; the fastest run is the one least disturbed)."""
    runs = []
    for _ in range(repeat):
        completed = subprocess.run([sys.executable, __file__, "--stage", stage, str(path)],
                                   capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            raise SystemExit(f"stage {stage} on {path.name} failed:\n{completed.stderr}")
        runs.append(json.loads(completed.stdout))
    return min(runs, key=lambda figures: figures["seconds"])


def _stage_main(stage: str, path: Path) -> None:
    figures = STAGES[stage](path.read_bytes())
    figures["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(figures))


# --- the run ----------------------------------------------------------------------------------------


def _generate(directory: Path, nodes: int) -> Path:
    path = directory / f"list-{nodes}x{PODS_PER_NODE}.json"
    if not path.exists():
        subprocess.run([sys.executable, str(BENCH_DIR / "gen.py"), str(nodes), str(PODS_PER_NODE),
                        str(path)], check=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="500,1000,2500,5000", help="node counts, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each stage; the fastest counts")
    parser.add_argument("--keep", type=Path, help="generate Lists here and keep them (else a temporary dir)")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("path", nargs="?", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        _stage_main(args.stage, args.path)
        return 0
    sizes = sorted(int(size) for size in args.sizes.split(","))
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        _run(args.keep, sizes, args.repeat)
    else:
        with tempfile.TemporaryDirectory(prefix="planner-bench-") as directory:
            _run(Path(directory), sizes, args.repeat)
    return 0


def _run(directory: Path, sizes: list[int], repeat: int) -> None:
    rows = []
    for nodes in sizes:
        path = _generate(directory, nodes)
        row = {"nodes": nodes, "mb": path.stat().st_size / 1e6}
        for stage in ("json", "orjson", "orjson_gc_on", "read_list", "plan"):
            row[stage] = _run_stage(stage, path, repeat)
            print(f"  {nodes} nodes, {stage}: {row[stage]['seconds']:.2f} s", file=sys.stderr, flush=True)
        rows.append(row)
    # Minutes for all pods, so a subset, once.
    client = _run_stage("client", _generate(directory, sizes[-1]), repeat=1)
    _report(rows, client, repeat)


def _report(rows: list[dict], client: dict, repeat: int) -> None:
    print(f"planner scale, {PODS_PER_NODE} pods a node; seconds (peak RSS MB), each stage in a fresh "
          f"process, fastest of {repeat}; parse = the faster of json and orjson with gc off")
    print(f"{'nodes':>6} {'pods':>7} {'MB':>5} | {'json':>13} {'orjson':>13} {'orjson gc on':>13} | "
          f"{'read_list':>13} {'plan':>13} | {'plan/parse':>10} {'decode+plan/parse':>17} | "
          f"{'client est.':>15}")
    for row in rows:
        pods, plan = row["read_list"]["pods"], row["plan"]
        parse = _faster_parse(row)
        client_seconds, client_mb = (client[f"{unit}_per_1000"] * pods / 1000 for unit in ("seconds", "mb"))
        print(f"{row['nodes']:>6} {pods:>7} {row['mb']:>5.0f} | "
              + " ".join(_cell(row[stage]) for stage in ("json", "orjson", "orjson_gc_on")) + " | "
              + f"{_cell(row['read_list'])} {_cell(plan)} | {plan['seconds'] / parse:>10.2f} "
              f"{(plan['decode_seconds'] + plan['seconds']) / parse:>17.2f} | "
              f"{client_seconds:>5.0f} s {client_mb:>5.0f} MB")
    print(f"client: ApiClient().deserialize of a V1PodList of the first {client['pods']} pods took "
          f"{client['seconds']:.1f} s ({client['seconds_per_1000']:.2f} s and "
          f"{client['mb_per_1000']:.0f} MB per 1,000 pods); 'client est.' scales it to each row's pods")
    first, last = rows[0], rows[-1]
    if len(rows) > 1:
        pods_growth = last["read_list"]["pods"] / first["read_list"]["pods"]
        print(f"growth {first['nodes']} -> {last['nodes']} nodes: pods x{pods_growth:.1f}, "
              f"plan x{last['plan']['seconds'] / first['plan']['seconds']:.1f}, "
              f"read_list x{last['read_list']['seconds'] / first['read_list']['seconds']:.1f}, "
              f"orjson x{last['orjson']['seconds'] / first['orjson']['seconds']:.1f}")
    plan = last["plan"]
    ratio = (plan["decode_seconds"] + plan["seconds"]) / _faster_parse(last)
    print(f"goal at {last['nodes']} nodes: decode + plan <= {PLAN_GOAL_RATIO:g}x the parse: "
          f"{_verdict(ratio <= PLAN_GOAL_RATIO)} ({ratio:.2f}x; plan alone "
          f"{plan['seconds'] / _faster_parse(last):.2f}x)")
    print(f"goal at {last['nodes']} nodes: peak RSS of decode + plan <= {RSS_GOAL_MB} MB: "
          f"{_verdict(plan['peak_rss_mb'] <= RSS_GOAL_MB)} ({plan['peak_rss_mb']:.0f} MB)")
    print(f"plan found {plan['evictions']} evictions and {plan['skipped']} skips; "
          f"decode before it took {plan['decode_seconds']:.2f} s")


def _faster_parse(row: dict) -> float:
    return min(row["json"]["seconds"], row["orjson"]["seconds"])


def _cell(figures: dict) -> str:
    return f"{figures['seconds']:6.2f} ({figures['peak_rss_mb']:4.0f})"


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


if __name__ == "__main__":
    sys.exit(main())
