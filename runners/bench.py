"""Training and evaluation speed of every model on Electronics-shaped data, against a naive baseline, in one run.

    python runners/bench.py                       # full size (192,403 users, 1,689,188 interactions), ~30 min
    python runners/bench.py --quick               # 2% of the size, a couple of minutes
    python runners/bench.py --models atrank,bpr --repeats 5 model.batch_size=256 model.lr=8.0   # Hydra overrides
    python runners/bench.py --contend             # ATRank on `sample`: quiet, then beside one busy process
    python runners/bench.py --full-ranking --model sasrec --dataset sports   # rank every test user, 3 times

What one run measures, each model in its own child process (so peak RSS is per model and a crash ends only that
model's row):
- data: generating the Electronics-shaped set (datasets/synthetic.electronics_like), building its table
  (datasets/table.build_table) and its `paper` split (datasets/split.make_split), in a child of their own;
- per model, at its own recipe (conf/model/<name>.yaml composed with conf/trainer/default.yaml, exactly as
  runners/run.py builds TrainSettings): preprocessing (training rows + one epoch's batch order), training
  speed (examples/s and the projected epoch time), evaluation time over the test users (runners.train.evaluation
  .evaluate on (positive, frozen negative) pairs) and the child's peak RSS;
- per model, the NAIVE baseline in its own child: every batch padded to the longest training history of the
  dataset (cap: the model's max_len), plain random batches (no length bucketing), Adam lr 1e-3 over dense
  gradients, glibc's default allocator settings; the same thread count as the optimised child (so the ratio
  does not hinge on how busy the machine is; threads are compared by running the bench twice, e.g. with
  trainer.num_threads=2); its speed-up = naive epoch time / optimised epoch time, both measured in this run
  (ratios are the figure to trust on a shared machine);
- optionally (--clothing, on by default at full size) training speed and peak RSS on the real `clothing_seq`.

How training is timed. A step is runners.train.trainer.StepRunner's (a batch from datasets.batching.BatchMaker, then
runners.step.optim.train_step with the optimiser of runners.step.optim.prepare_optimizer): the code path of train(), timed
in a child (runners/benchkit/bench_measure.py). Batch costs vary with the batch's history width (1 to ~400 items) and the
widest batches are rare and dear, so a few hundred consecutive steps would project an epoch badly. Instead the
epoch's real batch order (batch_order, seed 0, epoch 0) is split into strata by width (powers of two); `--steps`
batches are drawn from each stratum; after a warm-up pass, each of `--repeats` passes times every drawn batch
(wall clock and process CPU time) and projects the epoch as sum over strata of (batches in stratum x mean time
per batch). The table shows the median over passes and the spread (min-max). Evaluation runs once over all test
users (or over --eval-users of them, then projected linearly and marked). Results go to <out>/bench.csv,
<out>/bench.md and, with --mlflow, to MLflow. Modules: runners/benchkit/bench_paths.py (one model's children, the path
comparison), runners/benchkit/bench_measure.py (the children), runners/benchkit/bench_tables.py (tables and files).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(REPO_ROOT):
    sys.path.insert(0, str(REPO_ROOT))  # our `datasets` package, never Hugging Face's

from runners.train.wait_policy import record_wait_policy  # noqa: E402  (standard library only)

record_wait_policy()  # before torch loads, as runners/run.py does

from runners.benchkit import bench_tables as tables  # noqa: E402
from runners.benchkit.bench_paths import compare_paths, compose_recipe, measure, run_child  # noqa: E402


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every model, e.g. model.batch_size=256")
    parser.add_argument("--quick", action="store_true", help="2%% of the size, fewer steps (a couple of minutes)")
    parser.add_argument("--scale", type=float, default=None, help="generated size (1.0 = Electronics; quick: 0.02)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=None, help="comma-separated (default: every registered model)")
    parser.add_argument("--steps", type=int, default=None, help="batches drawn per width stratum (20; quick: 3)")
    parser.add_argument("--warmup", type=int, default=None, help="batches per stratum in the warm-up pass (2; quick: 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed passes (3; quick: 2)")
    parser.add_argument("--window", type=int, default=None, metavar="STEPS",
                        help="time STEPS consecutive batches of the epoch's own order (after 20 untimed ones) "
                             "instead of the stratified passes; strata the window misses get --steps drawn batches")
    parser.add_argument("--naive-steps", type=int, default=None, help="batches timed per naive pass (8; quick: 2)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    parser.add_argument("--device", default=None, help="trainer.device of every model: auto | cpu | cuda | cuda:N "
                        "(an accelerator skips the naive baseline, a CPU one)")
    parser.add_argument("--compare-paths", action="store_true",
                        help="also time each model's earlier path (independent rows, length buckets of 64 batches: "
                             "trainer.pair_rows=false trainer.bucket_chunk=64) and "
                             "paired rows on --processes data-parallel workers, side by side with the default")
    parser.add_argument("--processes", type=int, default=2, help="workers of the data-parallel path (2)")
    parser.add_argument("--eval-users", type=int, default=-1, help="test users evaluated (-1 all, 0 none)")
    parser.add_argument("--eval-repeats", type=int, default=1)
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="then profile STEPS training steps per model (torch.profiler): phases, top ops, "
                             "FLOPs (after the timed passes and the peak-RSS reading)")
    parser.add_argument("--no-malloc-tuning", action="store_true", help="optimised children: default allocator")
    parser.add_argument("--clothing", action=argparse.BooleanOptionalAction, default=None,
                        help="also measure clothing_seq (default: on at full size when the data is there)")
    parser.add_argument("--data-root", type=Path,
                        default=Path(os.environ.get("SEQREC_DATA", REPO_ROOT.parent / "shared" / "data")))
    parser.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("SEQREC_CACHE", REPO_ROOT / ".cache")))
    parser.add_argument("--out", type=Path, default=None, help="output folder (default outputs/bench/<time>)")
    parser.add_argument("--mlflow", action="store_true", help="log one MLflow run per model (experiment bench/...)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per child process")
    parser.add_argument("--contend", action="store_true",
                        help="time the models (default: atrank) on `sample` quiet, then beside one busy CPU-bound "
                             "process on the last CPU, side by side (runners/benchkit/bench_contend.py)")
    parser.add_argument("--full-ranking", action="store_true",
                        help="time a full ranking of every test user (--model, --dataset; runners/benchkit/"
                             "bench_full_ranking.py); overrides apply, e.g. protocol.ties=random")
    parser.add_argument("--model", default="sasrec", help="--full-ranking: the model, built untrained (sasrec)")
    parser.add_argument("--dataset", default="sports", help="--full-ranking: the dataset (sports)")
    parser.add_argument("--threads", type=int, default=None,
                        help="--full-ranking: torch threads (default: trainer.num_threads as a run resolves it)")
    parser.add_argument("--prepare", help=argparse.SUPPRESS)
    parser.add_argument("--model-child", help=argparse.SUPPRESS)
    return parser, parser.parse_args(argv)


def apply_defaults(args: argparse.Namespace) -> None:
    """The sizes --quick stands for, where not given."""
    q = args.quick
    args.scale = args.scale if args.scale is not None else (0.02 if q else 1.0)
    args.steps = args.steps or (3 if q else 20)
    args.repeats = args.repeats or (2 if q else 3)
    args.naive_steps = args.naive_steps or (2 if q else 8)
    args.warmup = args.warmup if args.warmup is not None else (1 if q else 2)


def chosen_models(parser: argparse.ArgumentParser, models: str | None) -> list[str]:
    from models.registry import available_models

    registered = available_models()
    chosen = [m.strip() for m in (models or ",".join(registered)).split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(registered))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {','.join(registered)}")
    return chosen


def machine() -> str:
    import torch

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{cpu_description()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}, "
            f"torch {torch.__version__}, load average {load} at the start")


ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")  # what decides which kernels MKL and oneDNN pick


def cpu_description(cpuinfo: str | None = None) -> str:
    """The CPU's model name with its family/model numbers and vector extensions: machines of this project share a
    model name across generations ("AMD EPYC" was Zen 4 on some days and Zen 5 on others), and figures from
    different generations are not comparable."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "unknown CPU"
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block is enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name", "unknown CPU")
    flags = set(fields.get("flags", "").split())
    isa = [f for f in ISA_FLAGS if f in flags]
    ids = f"family {fields['cpu family']} model {fields['model']}" if {"cpu family", "model"} <= fields.keys() else ""
    detail = ", ".join(x for x in (ids, " ".join(isa)) if x)
    return f"{name} ({detail})" if detail else name


def dataset_specs(args: argparse.Namespace, clothing: bool, tmp: str) -> list[tuple[str, dict]]:
    """The generated Electronics-shaped set (files in `tmp`) and, if asked for and present, clothing_seq."""
    specs = [("electronics_like", {"dataset": "electronics_like", "scale": args.scale, "seed": args.seed,
                                   "table_path": f"{tmp}/table.npz", "split_path": f"{tmp}/split.npz"})]
    if clothing:
        if (args.data_root / "amazon_clothing_seq").is_dir():
            specs.append(("clothing_seq", {"dataset": "clothing_seq", "kind": "clothing_seq",
                                           "data_root": str(args.data_root), "cache_dir": str(args.cache_dir)}))
        else:
            print(f"clothing_seq: skipped, {args.data_root / 'amazon_clothing_seq'} not found")
    return specs


def print_model(model: str, opt: dict, naive: dict | None, row: dict) -> None:
    if "error" in opt:
        print(f"  {model}: FAILED {opt['error']}\n{opt.get('stderr', '')[-1500:]}", flush=True)
        return
    if naive and "error" in naive:
        print(f"  {model}: naive baseline FAILED {naive['error']}", flush=True)
    print(f"  {model}: {tables.fmt(opt['ex_per_s'])} ex/s, epoch {tables.minutes(opt['epoch_s'])} min "
          f"(CPU {tables.minutes(opt['epoch_cpu_s'])}), eval {tables.fmt(opt.get('eval_s'), '.1f')} s, "
          f"peak RSS {tables.fmt(opt['peak_rss_mb'])} MB"
          + (f", peak GPU {tables.fmt(opt['peak_gpu_mb'])} MB on {opt['device']}" if opt.get("peak_gpu_mb") else "")
          + (f", naive epoch {tables.minutes(naive['epoch_s'])} min, speed-up {row['speedup']:.1f}x"
             if row.get("speedup") else ""), flush=True)


def bench_model(model: str, data_spec: dict, real: bool, args: argparse.Namespace,
                malloc_env: dict[str, str]) -> tuple[dict, dict]:
    """One model on one dataset: ({"optimised", "naive"[, "paths"]} children's results, its table row)."""
    from models.registry import get_model

    settings, params, threads, ftz = compose_recipe(model, args.overrides)
    spec = {**data_spec, "model": model, "settings": settings, "params": params, "num_threads": threads,
            "flush_denormal": ftz, "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
            "window": args.window, "seed": args.seed, "eval_users": 0 if real else args.eval_users,
            "eval_repeats": args.eval_repeats, "profile": args.profile, "variant": "optimised"}
    opt, naive = measure(spec, None if args.no_naive or real else args.naive_steps, malloc_env, args.timeout)
    measured = {"optimised": opt, "naive": naive}
    if args.compare_paths and "error" not in opt:
        measured["paths"] = compare_paths(spec, opt, args.processes, malloc_env, args.timeout, model)
    fmt = get_model(model).train_format
    if "error" in opt:
        row = {"model": model, "format": fmt, "error": opt["error"]}
    else:
        row = {**tables.table_row(model, fmt, opt, naive), "eval_projected": opt.get("eval_projected", False)}
    print_model(model, opt, naive, row)
    return measured, row


def bench_dataset(name: str, data: dict, data_spec: dict, models: list[str], args: argparse.Namespace,
                  malloc_env: dict[str, str], mach: str) -> tuple[dict, list[dict], list[dict], list[str]]:
    """Every model on one prepared dataset: (per-model results, table rows, path rows, Markdown sections)."""
    real = name != "electronics_like"
    measured, rows, path_rows = {}, [], []
    for model in models:
        measured[model], row = bench_model(model, data_spec, real, args, malloc_env)
        if "paths" in measured[model]:
            path_rows.append({"dataset": name, "model": model, **measured[model]["paths"]})
        rows.append(row)
    md = [tables.clothing_markdown(rows, data) if real else
          tables.speed_markdown(rows, data, f"{name} x{args.scale:g}")]
    if path_rows:
        md.append(tables.paths_markdown(path_rows, name, args.processes))
    md += [tables.profile_markdown(f"{m} ({name})", r["optimised"]["profile"])
           for m, r in measured.items() if r["optimised"].get("profile")]
    if args.mlflow:
        log_mlflow(rows, f"{name}" + ("" if real else f"_x{args.scale:g}"), args, mach)
    return measured, rows, path_rows, md


def log_mlflow(rows: list[dict], dataset: str, args: argparse.Namespace, mach: str) -> None:
    import mlflow

    from runners.tracking.tracking import ensure_store, get_or_create_experiment, tracking_uri

    uri = tracking_uri(None)
    ensure_store(uri)
    mlflow.set_tracking_uri(uri)
    exp = get_or_create_experiment(mlflow.MlflowClient(uri), f"bench/{dataset}")
    for r in rows:
        if r.get("error"):
            continue
        with mlflow.start_run(experiment_id=exp, run_name=f"bench/{r['model']}/{dataset}"):
            mlflow.set_tags({"model": r["model"], "dataset": dataset, "kind": "bench", "machine": mach})
            mlflow.log_params({"scale": args.scale, "batch_size": r["batch"], "threads": r["threads"],
                               "steps_per_stratum": args.steps, "repeats": args.repeats,
                               "overrides": " ".join(args.overrides)})
            mlflow.log_metrics({k: float(v) for k, v in r.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "batch"})


def run_child_mode(args: argparse.Namespace) -> bool:
    """--prepare / --model-child: this process is a measurement child; print its result as one JSON line."""
    if not (args.prepare or args.model_child):
        return False
    from runners.benchkit import bench_measure

    if args.prepare:
        print(json.dumps(bench_measure.prepare_data(json.loads(args.prepare))))
    else:
        print(json.dumps(bench_measure.measure_model(json.loads(args.model_child))))
    return True


def contend_main(parser: argparse.ArgumentParser, args: argparse.Namespace, malloc_env: dict[str, str]) -> int:
    """--contend: quiet and busy figures side by side (runners/benchkit/bench_contend.py); printed and written to
    <out>/contend.md."""
    from runners.benchkit.bench_contend import run_contend

    models = chosen_models(parser, args.models or "atrank")
    out_dir = args.out or REPO_ROOT / "outputs" / "bench" / time.strftime("%Y-%m-%d_%H-%M-%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    mach = machine()
    print(f"bench --contend: {mach}\nmodels {','.join(models)}; {args.steps} batches per stratum, {args.repeats} "
          f"timed passes; overrides {args.overrides or 'none'}; output {out_dir}", flush=True)
    status, text = run_contend(models, args.overrides, args.data_root, args.cache_dir, args.steps, args.repeats,
                               args.seed, malloc_env, args.timeout, mach)
    (out_dir / "contend.md").write_text(text)
    print("\n" + text)
    return status


def main(argv: list[str] | None = None) -> int:
    parser, args = parse_args(argv)
    if run_child_mode(args):
        return 0
    from runners.train.runtime import MALLOC_TUNING

    apply_defaults(args)
    malloc_env = {} if args.no_malloc_tuning else {k: str(v) for k, v in MALLOC_TUNING.items()}
    if args.contend:
        return contend_main(parser, args, malloc_env)
    if args.full_ranking:
        from runners.benchkit.bench_full_ranking import run_full_ranking

        print(f"bench --full-ranking: {machine()}", flush=True)
        status, text = run_full_ranking(args.model, args.dataset, args.overrides, args.repeats, args.threads,
                                        cpu_description())
        print(text)
        return status
    if args.device:
        args.overrides.append(f"trainer.device={args.device}")
        args.no_naive = args.no_naive or args.device != "cpu"
    models = chosen_models(parser, args.models)
    clothing = args.clothing if args.clothing is not None else (args.scale == 1.0 and not args.quick)
    out_dir = args.out or REPO_ROOT / "outputs" / "bench" / time.strftime("%Y-%m-%d_%H-%M-%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    mach = machine()
    timing = (f"{args.window} consecutive batches (+ {args.steps} per stratum missed)" if args.window else
              f"{args.steps} batches per stratum, {args.repeats} timed passes")
    naive = "off" if args.no_naive else f"{args.naive_steps} batches x {args.repeats}"
    print(f"bench: {mach}\nmodels {','.join(models)}; scale {args.scale:g}; {timing}; naive {naive}"
          f"; overrides {args.overrides or 'none'}; output {out_dir}", flush=True)
    t_start = time.perf_counter()
    results: dict = {"machine": mach, "args": {k: str(v) for k, v in vars(args).items()}, "datasets": {}}
    csv_rows, md, all_path_rows = [], [], []
    with tempfile.TemporaryDirectory(prefix="seqrec_bench_") as tmp:
        for name, data_spec in dataset_specs(args, clothing, tmp):
            data = run_child("prepare", data_spec, malloc_env, args.timeout)
            if "error" in data:
                print(f"{name}: data preparation FAILED: {data['error']}\n{data.get('stderr', '')}")
                return 1
            data["dataset"] = name
            print(f"{name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in data.items() if k.endswith("_s"))
                  + f", stats {data['stats']}, peak RSS {data['peak_rss_mb']:,.0f} MB", flush=True)
            measured, rows, path_rows, sections = bench_dataset(name, data, data_spec, models, args, malloc_env, mach)
            results["datasets"][name] = {"data": data, "models": measured}
            csv_rows += [{"dataset": name, **row} for row in rows]
            all_path_rows += path_rows
            md += sections
    command = "python runners/bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (f"## Benchmark ({time.strftime('%Y-%m-%d %H:%M')})\n\nMachine: {mach}.\nCommand: `{command.strip()}`"
            f"\n\n" + "\n\n".join(md) + "\n")
    tables.write_outputs(out_dir, csv_rows, all_path_rows, results, text)
    print("\n" + text)
    print(f"bench: {time.perf_counter() - t_start:.0f} s; wrote {out_dir / 'bench.csv'}, {out_dir / 'bench.md'}")
    return 0 if all("error" not in r for r in csv_rows) else 1


if __name__ == "__main__":
    sys.exit(main())
