"""The GPU check, one time-boxed script (< 8 minutes on one GPU), no MLflow:

    python runners/gpu_check.py --device cuda            # on the GPU machine
    python runners/gpu_check.py --device cpu --smoke     # anywhere, tiny sizes (tests/runners/test_gpu_check.py)

1. Throughput on the Electronics-shaped generated data (runners/bench_data.py's shape, datasets/synthetic.py): per
   model at its own recipe (batch 32 for the Table 3 models), `--steps` batches per width stratum timed through
   runners/bench_measure.measure_model (the bench children's code, run in this one process), projected to the
   epoch; ATRank also at batch 1024 and, on CUDA, with trainer.cuda_graphs=true (eager vs graphs, measured) and
   trainer.precision=bf16. Prints examples/s, the projected epoch, evaluation of all 192,403 test users and the
   peak GPU memory.
2. Correctness: ATRank, 1 epoch of clothing_seq (trainer.epochs=1, paper protocol), test AUC on the device beside
   the CPU path's (and bf16 on CUDA).
Everything past `--budget-s` seconds is skipped and says so, so the script ends in time whatever the GPU does.
Writes <out>/gpu_check.json. Needs torch, numpy, pandas, scipy, scikit-learn, hydra-core / omegaconf and this repo.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(REPO_ROOT):
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from runners.device import device_info, resolve_device, what_torch_sees  # noqa: E402

MODELS = "atrank,bpr,bilstm,bilstm_att,cnn,din,gru4rec,sasrec,attrec"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="auto | cpu | cuda | cuda:N (default cuda)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and step counts (the CPU test of this script)")
    p.add_argument("--models", default=MODELS)
    p.add_argument("--steps", type=int, default=None, help="batches timed per width stratum (5; smoke 1)")
    p.add_argument("--scale", type=float, default=None, help="generated size, 1.0 = Electronics (smoke 0.003)")
    p.add_argument("--budget-s", type=float, default=360.0, help="skip what would start after this many seconds")
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
    """The time box: `due(name)` says whether a part may still start, and records a skip."""

    def __init__(self, budget_s: float):
        self.t0, self.budget_s, self.skipped = time.perf_counter(), budget_s, []

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def due(self, name: str) -> bool:
        if self.elapsed() < self.budget_s:
            return True
        self.skipped.append(name)
        print(f"  {name}: SKIPPED (past the {self.budget_s:.0f} s budget)", flush=True)
        return False


def recipe(model: str, overrides: list[str]) -> tuple[dict, dict]:
    from runners.bench_paths import compose_recipe

    settings, params, _, _ = compose_recipe(model, overrides)
    return settings, params


def throughput(args: argparse.Namespace, device: str, clock: Clock, tmp: str) -> list[dict]:
    """Part 1: each model (and the ATRank variants) on the Electronics-shaped data."""
    from runners import bench_measure

    data_spec = {"dataset": "electronics_like", "scale": args.scale, "seed": 0, "table_path": f"{tmp}/table.npz",
                 "split_path": f"{tmp}/split.npz"}
    data = bench_measure.prepare_data(data_spec)
    print(f"data: {data['stats']}, prepared in {clock.elapsed():.0f} s", flush=True)
    base = [f"trainer.device={device}", *args.set]
    variants = [(m, m, []) for m in args.models.split(",") if m]
    if "atrank" in args.models.split(","):
        variants.append(("atrank", "atrank batch 1024", ["model.batch_size=1024"]))
    if resolve_device(device).type == "cuda" and "atrank" in args.models.split(","):
        variants += [("atrank", "atrank cuda graphs", ["trainer.cuda_graphs=true"]),
                     ("atrank", "atrank bf16", ["trainer.precision=bf16"])]
    rows = []
    for model, label, extra in variants:
        if not clock.due(label):
            continue
        rows.append(measure_one(model, label, base + extra, data_spec, args))
    return rows


def measure_one(model: str, label: str, overrides: list[str], data_spec: dict, args: argparse.Namespace) -> dict:
    from runners import bench_measure

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
        return {"label": label, "error": f"{type(e).__name__}: {e}"}
    row = {"label": label, "batch": r["batch_size"], "ex_per_s": r["ex_per_s"], "epoch_min": r["epoch_s"] / 60,
           "step_ms": r["epoch_s"] / r["batches_per_epoch"] * 1e3, "eval_s": r.get("eval_s"),
           "eval_users": r.get("eval_users"), "peak_gpu_mb": r.get("peak_gpu_mb"), "peak_rss_mb": r["peak_rss_mb"],
           "steps_timed": r["steps_timed"], "wall_s": time.perf_counter() - t0}
    gpu = f"{row['peak_gpu_mb']:,.0f} MB" if row["peak_gpu_mb"] is not None else "-"
    print(f"  {label}: batch {row['batch']}, {row['ex_per_s']:,.0f} ex/s, {row['step_ms']:.1f} ms/step, projected "
          f"epoch {row['epoch_min']:.1f} min, eval {row['eval_s']:.1f} s ({row['eval_users']:,} users), peak GPU "
          f"{gpu}, peak RSS {row['peak_rss_mb']:,.0f} MB ({row['wall_s']:.0f} s)", flush=True)
    return row


def clothing_auc(device: str, precision: str, args: argparse.Namespace) -> dict:
    """Part 2: ATRank, one epoch of clothing_seq (paper protocol), the test AUC at its end; no MLflow."""
    from hydra import compose, initialize_config_dir

    from datasets.batching import eval_rows
    from datasets.load import load_dataset
    from datasets.split import data_options, load_split
    from models.registry import get_model
    from runners.config import data_settings, model_params, train_settings
    from runners.evaluation import TestSetGuard
    from runners.runtime import seed_everything
    from runners.trainer import train

    overrides = ["model=atrank", "dataset=clothing_seq", "trainer.epochs=1", "trainer.eval_every=0",
                 f"trainer.device={device}", f"trainer.precision={precision}", *args.set]
    overrides += ["trainer.max_steps=30"] if args.smoke else []
    overrides += [f"paths.data_root={args.data_root}"] if args.data_root else []
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    d = data_settings(cfg)
    table = load_dataset(d.dataset, d.kind, d.data_root, d.cache_dir, data_options(d.options, d.split, d.short_users))
    split = load_split(table, d.cache_dir, d.split, d.split_seed, d.eval_negatives, d.eval_negatives_kind,
                       d.short_users)
    seed_everything(cfg.seed)
    model = get_model("atrank")(n_users=table.n_users, n_items=table.n_items, n_categories=table.n_categories,
                                item_category=table.item_category, **model_params(cfg))
    t0 = time.perf_counter()
    result = train(model, table, split, train_settings(cfg, None), TestSetGuard(eval_rows(table, split, "test"), None))
    row = {"device": device, "precision": precision, "test_auc": result.best_score, "steps": result.steps,
           "train_s": result.train_seconds, "wall_s": time.perf_counter() - t0}
    print(f"  clothing_seq atrank on {device} ({precision}): test AUC {row['test_auc']:.4f} after {row['steps']} "
          f"steps, {row['train_s']:.0f} s training", flush=True)
    return row


def correctness(args: argparse.Namespace, device: str, clock: Clock) -> list[dict]:
    runs = [(device, "fp32")]
    if not args.no_cpu_reference and resolve_device(device).type != "cpu":
        runs.append(("cpu", "fp32"))
    if resolve_device(device).type == "cuda":
        runs.append((device, "bf16"))
    rows = []
    for dev, precision in runs:
        if clock.due(f"clothing_seq {dev} {precision}"):
            try:
                rows.append(clothing_auc(dev, precision, args))
            except Exception as e:  # noqa: BLE001 - reported; the other runs still go
                print(f"  clothing_seq on {dev} ({precision}): FAILED {type(e).__name__}: {e}", flush=True)
                rows.append({"device": dev, "precision": precision, "error": f"{type(e).__name__}: {e}"})
    return rows


def write(out_dir: Path, result: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"gpu_check: {what_torch_sees()}", flush=True)
    device = str(resolve_device(args.device))  # cuda without a GPU stops here, saying what torch sees
    info = device_info(torch.device(device))
    print(f"device: {info}; {'smoke sizes' if args.smoke else 'full size'}, budget {args.budget_s:.0f} s",
          flush=True)
    clock = Clock(args.budget_s)
    with tempfile.TemporaryDirectory(prefix="seqrec_gpu_check_") as tmp:
        print("1. throughput, Electronics-shaped data", flush=True)
        speed = throughput(args, device, clock, tmp)
    write(args.out, {"device": info, "smoke": args.smoke, "throughput": speed, "partial": True})
    print("2. correctness, clothing_seq ATRank, 1 epoch", flush=True)
    aucs = correctness(args, device, clock)
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
