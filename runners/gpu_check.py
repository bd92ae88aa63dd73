"""The GPU check, one time-boxed script (at most 6 minutes on one GPU), no MLflow:

    python3 runners/gpu_check.py --device cuda            # on the GPU machine
    python3 runners/gpu_check.py --device cpu --smoke     # anywhere, tiny sizes (tests/runners/benchkit/)

It answers in this order, so whatever is cut comes last:
1. ATRank on the Electronics-shaped generated data (runners/bench_data.py's shape, datasets/synthetic.py), at its
   recipe's batch 32: eager, then on CUDA with trainer.cuda_graphs=true and with trainer.precision=bf16; then at
   batch 1024. Each through runners/benchkit/bench_measure.measure_model (the bench children's code, in this one
   process): `--steps` batches per width stratum, every padded width captured before timing when graphs are on, projected
   to the epoch; examples/s, the projected epoch, evaluation of all 192,403 test users, peak GPU memory and the
   CUDA-graph outcomes (captured / failed shapes, replayed / eager steps).
2. The other models the same way, each at its own recipe.
3. Correctness: ATRank, 1 epoch of clothing_seq (trainer.epochs=1, paper protocol), test AUC on the device (fp32).
4. The longer parts: the same in bf16, and on the CPU (the reference the device AUC is compared with).
`--budget-s` is a time box: each part is estimated before it starts (a throughput part from the slowest one
before it, a clothing_seq part from its examples and a measured or assumed rate) and skipped, saying so, when it
would not end inside the box. Capture failures are logged as WARNINGs. Writes <out>/gpu_check.json.
Needs torch, numpy, pandas, scipy, scikit-learn, hydra-core / omegaconf (runners/gpu_wheels.sh) and this repo.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(REPO_ROOT):
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from runners.step.device import device_info, resolve_device, use_device, what_torch_sees  # noqa: E402

MODELS = "atrank,bpr,bilstm,bilstm_att,cnn,din,gru4rec,sasrec,attrec,caser,bert4rec"
FIRST_PART_S = {"full": 60.0, "smoke": 10.0}  # assumed time of the first throughput part (none measured yet)
CPU_EX_PER_S = 8000.0  # assumed CPU training rate of ATRank on clothing_seq (14,224 ex/s measured on 2 cores)
CLOTHING_OVERHEAD_S = 30.0  # loading clothing_seq, building the model, the test evaluation (assumed)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="auto | cpu | cuda | cuda:N (default cuda)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and step counts (the CPU test of this script)")
    p.add_argument("--models", default=MODELS)
    p.add_argument("--steps", type=int, default=None, help="batches timed per width stratum (5; smoke 1)")
    p.add_argument("--scale", type=float, default=None, help="generated size, 1.0 = Electronics (smoke 0.003)")
    p.add_argument("--budget-s", type=float, default=330.0,
                   help="time box: skip each part whose estimate would not end inside it (default 330)")
    p.add_argument("--no-cpu-reference", action="store_true", help="skip the CPU clothing_seq run")
    p.add_argument("--data-root", default=None, help="holds amazon_clothing_seq/ (default: as runners/run.py)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a Hydra override for every run, e.g. --set trainer.device_batches=true")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "gpu_check")
    args = p.parse_args(argv)
    args.steps = args.steps or (1 if args.smoke else 5)
    args.scale = args.scale or (0.003 if args.smoke else 1.0)
    return args


class Clock:
    """The time box: `fits(name, estimate_s)` says whether a part estimated to take `estimate_s` ends inside it,
    and records a skip."""

    def __init__(self, budget_s: float):
        self.t0, self.budget_s, self.skipped = time.perf_counter(), budget_s, []

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def fits(self, name: str, estimate_s: float) -> bool:
        left = self.budget_s - self.elapsed()
        if estimate_s <= left:
            return True
        self.skipped.append({"part": name, "estimate_s": round(estimate_s, 1), "left_s": round(left, 1)})
        print(f"  {name}: SKIPPED (estimated {estimate_s:.0f} s, {max(left, 0):.0f} s left of the "
              f"{self.budget_s:.0f} s budget)", flush=True)
        return False


def recipe(model: str, overrides: list[str]) -> tuple[dict, dict]:
    from runners.benchkit.bench_paths import compose_recipe

    settings, params, _, _ = compose_recipe(model, overrides)
    return settings, params


def variants(models: list[str], cuda: bool) -> list[tuple[str, str, list[str]]]:
    """(model, label, overrides) of the throughput parts, in the order the questions are asked."""
    out = []
    if "atrank" in models:
        out.append(("atrank", "atrank", []))
        if cuda:
            out += [("atrank", "atrank cuda graphs", ["trainer.cuda_graphs=true"]),
                    ("atrank", "atrank bf16", ["trainer.precision=bf16"])]
        out.append(("atrank", "atrank batch 1024", ["model.batch_size=1024"]))
    return out + [(m, m, []) for m in models if m != "atrank"]


def throughput(args: argparse.Namespace, device: str, clock: Clock, tmp: str) -> list[dict]:
    """Parts 1 and 2: the ATRank variants, then each other model, on the Electronics-shaped data."""
    from runners.benchkit import bench_measure

    data_spec = {"dataset": "electronics_like", "scale": args.scale, "seed": 0, "table_path": f"{tmp}/table.npz",
                 "split_path": f"{tmp}/split.npz"}
    data = bench_measure.prepare_data(data_spec)
    print(f"data: {data['stats']}, prepared in {clock.elapsed():.0f} s", flush=True)
    base = [f"trainer.device={device}", *args.set]
    rows: list[dict] = []
    cuda = resolve_device(device).type == "cuda"
    for model, label, extra in variants([m for m in args.models.split(",") if m], cuda):
        walls = [r["wall_s"] for r in rows if "wall_s" in r]
        estimate = max(walls) if walls else FIRST_PART_S["smoke" if args.smoke else "full"]
        if clock.fits(label, estimate):
            rows.append(measure_one(model, label, base + extra, data_spec, args))
    return rows


def measure_one(model: str, label: str, overrides: list[str], data_spec: dict, args: argparse.Namespace) -> dict:
    from runners.benchkit import bench_measure

    settings, params = recipe(model, overrides)
    spec = {**data_spec, "model": model, "settings": settings, "params": params, "num_threads": None,
            "flush_denormal": True, "steps": args.steps, "warmup": 1, "repeats": 1, "seed": 0, "eval_users": -1,
            "eval_repeats": 1, "profile": 0, "variant": "optimised"}
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        r = bench_measure.measure_model(spec)
    except Exception as e:  # noqa: BLE001 - one model's failure is reported, the others still run
        print(f"  {label}: FAILED {type(e).__name__}: {e}", flush=True)
        return {"label": label, "error": f"{type(e).__name__}: {e}", "wall_s": time.perf_counter() - t0}
    row = {"label": label, "batch": r["batch_size"], "ex_per_s": r["ex_per_s"], "epoch_min": r["epoch_s"] / 60,
           "step_ms": r["epoch_s"] / r["batches_per_epoch"] * 1e3, "eval_s": r.get("eval_s"),
           "eval_users": r.get("eval_users"), "peak_gpu_mb": r.get("peak_gpu_mb"), "peak_rss_mb": r["peak_rss_mb"],
           "steps_timed": r["steps_timed"], "cuda_graphs": r.get("cuda_graphs"), "wall_s": time.perf_counter() - t0}
    gpu = f"{row['peak_gpu_mb']:,.0f} MB" if row["peak_gpu_mb"] is not None else "-"
    print(f"  {label}: batch {row['batch']}, {row['ex_per_s']:,.0f} ex/s, {row['step_ms']:.1f} ms/step, projected "
          f"epoch {row['epoch_min']:.1f} min, eval {row['eval_s']:.1f} s ({row['eval_users']:,} users), peak GPU "
          f"{gpu}, peak RSS {row['peak_rss_mb']:,.0f} MB ({row['wall_s']:.0f} s)", flush=True)
    graphs = row["cuda_graphs"]
    if graphs is not None:
        print(f"    cuda graphs: {graphs['captured']} captured, {graphs['failed']} failed, {graphs['replays']} "
              f"steps replayed, {graphs['eager_steps']} eager" + (f" ({graphs['blocker']})" if graphs["blocker"]
                                                                  else ""), flush=True)
        for failure in graphs["failures"]:
            print(f"    capture failed: {failure}", flush=True)
    return row


def clothing_auc(device: str, precision: str, args: argparse.Namespace, clock: Clock,
                 ex_per_s: float) -> dict | None:
    """Parts 3 and 4: ATRank, one epoch of clothing_seq (paper protocol), the test AUC at its end; no MLflow. Skipped
    (None) when its estimate (its examples at `ex_per_s`, plus loading and evaluation) would not fit the box."""
    from hydra import compose, initialize_config_dir

    from datasets.batching import eval_rows
    from datasets.load import load_dataset
    from datasets.split import data_options, load_split
    from models.registry import get_model
    from runners.config import data_settings, model_params, train_settings
    from runners.train.evaluation import TestSetGuard
    from runners.train.runtime import configure_runtime, seed_everything
    from runners.train.trainer import train, training_rows

    overrides = ["model=atrank", "dataset=clothing_seq", "trainer.epochs=1", "trainer.eval_every=0",
                 f"trainer.device={device}", f"trainer.precision={precision}", *args.set]
    overrides += ["trainer.max_steps=30"] if args.smoke else []
    overrides += [f"paths.data_root={args.data_root}"] if args.data_root else []
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    d, s = data_settings(cfg), train_settings(cfg, None)
    threads = cfg.trainer.num_threads
    configure_runtime(int(threads) if threads else None, bool(cfg.trainer.flush_denormal))  # as runners/run.py
    table = load_dataset(d.dataset, d.kind, d.data_root, d.cache_dir, data_options(d.options, d.split, d.short_users))
    split = load_split(table, d.cache_dir, **d.split_options())
    seed_everything(cfg.seed)
    model = get_model("atrank")(n_users=table.n_users, n_items=table.n_items, n_categories=table.n_categories,
                                item_category=table.item_category, **model_params(cfg))
    rows, per = training_rows(model, table, split, s.pair_rows)
    steps = -(-len(rows) // (s.batch_size // per))
    steps = min(steps, s.max_steps) if s.max_steps is not None else steps
    if not clock.fits(f"clothing_seq {device} {precision}", steps * s.batch_size / ex_per_s + CLOTHING_OVERHEAD_S):
        return None
    t0 = time.perf_counter()
    result = train(model, table, split, s, TestSetGuard(eval_rows(table, split, "test"), None))
    row = {"device": device, "precision": precision, "test_auc": result.best_score, "steps": result.steps,
           "train_s": result.train_seconds, "wall_s": time.perf_counter() - t0}
    print(f"  clothing_seq atrank on {device} ({precision}): test AUC {row['test_auc']:.4f} after {row['steps']} "
          f"steps, {row['train_s']:.0f} s training", flush=True)
    return row


def rate(speed: list[dict], label: str, fallback: float) -> float:
    """The measured examples/s of throughput row `label`, else `fallback`."""
    return next((r["ex_per_s"] for r in speed if r.get("label") == label and "ex_per_s" in r), fallback)


def correctness(args: argparse.Namespace, device: str, clock: Clock, speed: list[dict]) -> list[dict]:
    """The device's fp32 AUC first; then the longer parts: bf16 (CUDA), the CPU reference."""
    kind = resolve_device(device).type
    device_rate = rate(speed, "atrank", CPU_EX_PER_S)
    runs = [(device, "fp32", device_rate)]
    if kind == "cuda":
        runs.append((device, "bf16", rate(speed, "atrank bf16", device_rate)))
    if not args.no_cpu_reference and kind != "cpu":
        runs.append(("cpu", "fp32", CPU_EX_PER_S))
    rows = []
    for dev, precision, ex_per_s in runs:
        try:
            row = clothing_auc(dev, precision, args, clock, ex_per_s)
        except Exception as e:  # noqa: BLE001 - reported; the other runs still go
            print(f"  clothing_seq on {dev} ({precision}): FAILED {type(e).__name__}: {e}", flush=True)
            row = {"device": dev, "precision": precision, "error": f"{type(e).__name__}: {e}"}
        if row is not None:
            rows.append(row)
    return rows


def write(out_dir: Path, result: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    print(f"gpu_check: {what_torch_sees()}", flush=True)
    device = str(use_device(resolve_device(args.device)))  # cuda without a GPU stops here, saying what torch sees
    info = device_info(torch.device(device))
    print(f"device: {info}; {'smoke sizes' if args.smoke else 'full size'}, budget {args.budget_s:.0f} s",
          flush=True)
    clock = Clock(args.budget_s)
    with tempfile.TemporaryDirectory(prefix="seqrec_gpu_check_") as tmp:
        print("1-2. throughput, Electronics-shaped data: ATRank eager / graphs / bf16 / batch 1024, then the others",
              flush=True)
        speed = throughput(args, device, clock, tmp)
    write(args.out, {"device": info, "smoke": args.smoke, "throughput": speed, "partial": True})
    print("3-4. correctness, clothing_seq ATRank, 1 epoch: device fp32, then bf16 and the CPU reference", flush=True)
    aucs = correctness(args, device, clock, speed)
    for r in aucs:
        if "test_auc" in r:
            print(f"   AUC {r['device']:>7} {r['precision']}: {r['test_auc']:.4f}")
    write(args.out, {"device": info, "smoke": args.smoke, "throughput": speed, "clothing_seq_atrank": aucs,
                     "skipped": clock.skipped, "wall_s": clock.elapsed()})
    print(f"gpu_check: {clock.elapsed():.0f} s, wrote {args.out / 'gpu_check.json'}", flush=True)
    failed = [r for r in speed + aucs if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
