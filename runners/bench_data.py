"""Benchmark of the data stage: parse time and peak memory of load_dataset, each in its own child process.

Measures, each with a fresh cache directory (so the raw files are hashed and parsed and the table is built):
1. amazon_hin from the shared data folder (real public files, 195,791 interactions);
2. a generated Electronics-size raw Amazon pair (1,689,188 reviews with realistic text, 63,001 items; meta with
   498,196 rows like the real meta_Electronics) parsed end to end through the real "amazon" loader.
The generated files are kept in --work-dir and reused by later runs (their generation is timed separately).

    PYTHONPATH=. python runners/bench_data.py            # full size; targets: < 60 s and < 3 GB on 2 cores
    PYTHONPATH=. python runners/bench_data.py --quick    # 2% of the size, a few seconds
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # our `datasets` package, never Hugging Face's

TARGET_SECONDS = 60.0
TARGET_GB = 3.0


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: kilobytes


def _measure(spec: dict) -> dict:
    """Child side: one timed load_dataset call (and the cached second call), plus this process's peak RSS."""
    import logging

    from datasets.load import load_dataset

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    baseline = _peak_rss_gb()
    t0, cpu0 = time.perf_counter(), time.process_time()
    table = load_dataset(spec["name"], spec["kind"], spec["data_root"], spec["cache_dir"], spec.get("options"))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    peak = _peak_rss_gb()
    t1 = time.perf_counter()
    load_dataset(spec["name"], spec["kind"], spec["data_root"], spec["cache_dir"], spec.get("options"))
    return {"seconds": seconds, "cpu_seconds": cpu, "cached_seconds": time.perf_counter() - t1, "peak_rss_gb": peak,
            "import_rss_gb": baseline, "stats": table.stats()}


def _generate(spec: dict) -> dict:
    """Child side: generate the Electronics-shaped data and write it as raw Amazon files."""
    from datasets import synthetic

    t0 = time.perf_counter()
    data = synthetic.electronics_like(seed=spec["seed"], scale=spec["scale"])
    t1 = time.perf_counter()
    extra = int(round((synthetic.REAL_META_ELECTRONICS_ROWS - synthetic.ELECTRONICS_SHAPE["n_items"]) * spec["scale"]))
    files = synthetic.write_amazon_raw(data, Path(spec["directory"]), spec["category"], extra_meta_rows=extra,
                                       seed=spec["seed"], compresslevel=1)  # level 1: faster to write, same parse
    return {"generate_seconds": t1 - t0, "write_seconds": time.perf_counter() - t1, "peak_rss_gb": _peak_rss_gb(),
            "files": {f.name: f.stat().st_size for f in files}}


def _child(mode: str, spec: dict, env_extra: dict[str, str] | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
           **(env_extra or {})}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), f"--{mode}", json.dumps(spec)],
                         env=env, capture_output=True, text=True, cwd=REPO_ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{out.stderr[-4000:]}")
    sys.stderr.write(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _measure_fresh(name: str, kind: str, data_root: Path, work_dir: Path, options: dict | None = None) -> dict:
    fresh = Path(tempfile.mkdtemp(dir=work_dir, prefix=f"cache_{name}_"))
    try:  # fresh table cache and checksum sidecars: the measurement includes hashing and parsing
        return _child("measure", {"name": name, "kind": kind, "data_root": str(data_root),
                                  "cache_dir": str(fresh / "tables"), "options": options},
                      {"SEQREC_CACHE": str(fresh / "sha")})
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


def _report(label: str, r: dict) -> bool:
    ok = r["seconds"] < TARGET_SECONDS and r["peak_rss_gb"] < TARGET_GB  # wall time: includes waiting on a busy box
    stats = ", ".join(f"{k}={v:,}" for k, v in r["stats"].items())
    print(f"{label:<28} parse+table {r['seconds']:5.1f} s (CPU {r['cpu_seconds']:5.1f} s, all threads)   "
          f"peak RSS {r['peak_rss_gb']:5.2f} GB "
          f"(after imports {r['import_rss_gb']:.2f})   cache hit {r['cached_seconds']:.2f} s   "
          f"[{'ok' if ok else 'OVER TARGET'}]\n{'':<28} {stats}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2%% of the Electronics size")
    parser.add_argument("--scale", type=float, default=None, help="size of the generated set (1.0 = Electronics)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", type=Path,
                        default=Path(os.environ.get("SEQREC_DATA", REPO_ROOT.parent / "shared" / "data")))
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "seqrec_bench_data",
                        help="where generated raw files are kept (reused) and fresh caches are made")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(_measure(json.loads(args.measure))))
        return 0
    if args.generate:
        print(json.dumps(_generate(json.loads(args.generate))))
        return 0

    from datasets import synthetic

    scale = args.scale if args.scale is not None else (0.02 if args.quick else 1.0)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    print(f"bench_data: {os.cpu_count()} CPU(s), targets < {TARGET_SECONDS:.0f} s and < {TARGET_GB:.0f} GB per load")
    ok = True
    if (args.data_root / "amazon_hin").is_dir():
        ok &= _report("amazon_hin (real files)", _measure_fresh("amazon_hin", "amazon_hin", args.data_root,
                                                                 args.work_dir))
    else:
        print(f"amazon_hin: skipped, {args.data_root / 'amazon_hin'} not found")

    # At full size the files carry the real name, so the loader checks them against the reference statistics.
    category = "Electronics" if scale == 1.0 else "Electronics_scaled"
    root = args.work_dir / f"electronics_v{synthetic.SYNTHETIC_VERSION}_scale{scale:g}_seed{args.seed}"
    directory = root / "amazon"
    if not all((directory / f).is_file() for f in (f"reviews_{category}_5.json.gz", f"meta_{category}.json.gz")):
        g = _child("generate", {"seed": args.seed, "scale": scale, "directory": str(directory), "category": category})
        print(f"generated Electronics-shaped raw files in {directory}: generate {g['generate_seconds']:.1f} s, "
              f"write {g['write_seconds']:.1f} s, peak RSS {g['peak_rss_gb']:.2f} GB")
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:,.0f} MB" for p in sorted(directory.iterdir()))
    print(f"raw files: {sizes}")
    ok &= _report(f"amazon, generated x{scale:g}", _measure_fresh("electronics_synth", "amazon", root, args.work_dir,
                                                                   {"category": category, "download": False}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
