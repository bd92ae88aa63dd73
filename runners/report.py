"""Regenerate ATRank Table 3 from MLflow: python runners/report.py [filters] -> reports/out/<name>.md + PNGs.

Examples:
  python runners/report.py --dataset clothing_seq --protocol paper
  python runners/report.py --experiment sample/paper --metric test_roc_auc --name sample_roc
  python runners/report.py --tracking-uri sqlite:////abs/path/mlflow.db --filter "params.trainer.max_steps = '2000'"
  python runners/report.py --dataset clothing_seq --protocol paper --protocol loo_val --protocol optimism
  python runners/report.py --benchmark s3rec --name s3rec_benchmarks   # beside the published S3Rec tables
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(REPO_ROOT):  # our `datasets` package, never Hugging Face's
    sys.path.insert(0, str(REPO_ROOT))

from reports.benchmarks import write_benchmark_report  # noqa: E402
from reports.table3 import PAPER_METRIC, RunFilter, write_report  # noqa: E402
from runners.tracking.tracking import tracking_uri  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "reports" / "out"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawTextHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--experiment", action="append", default=[], help="MLflow experiment name (repeatable), "
                    "e.g. clothing_seq/paper; default: all experiments")
    ap.add_argument("--dataset", action="append", default=[], help="dataset tag (repeatable); also forces its column")
    ap.add_argument("--protocol", action="append", default=[], choices=["paper", "loo_val", "optimism"],
                    help="repeatable; optimism = the diagnostic protocol: its own section, never a Table 3")
    ap.add_argument("--model", action="append", default=[], help="model tag (repeatable)")
    ap.add_argument("--recipe", action="append", default=[], help="recipe tag: default | reference (repeatable)")
    ap.add_argument("--sweep-dir", default=None, help="only runs of this Hydra sweep (tag sweep_dir, absolute path)")
    ap.add_argument("--filter", default="",
                    help="extra MLflow filter string, e.g. \"params.trainer.max_steps = '2000'\"")
    ap.add_argument("--metric", default=PAPER_METRIC, help="final metric to tabulate (default: test_auc, the paper's)")
    ap.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or <repo>/mlruns/mlflow.db")
    ap.add_argument("--name", default=None, help="report name (file <out>/<name>.md); default from the filters")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    ap.add_argument("--title", default=None)
    ap.add_argument("--note", default="", help="a paragraph printed under the title (e.g. why the budget is short)")
    ap.add_argument("--benchmark", default=None, choices=["s3rec"],
                    help="a standard-benchmark report instead of Table 3: the protocol's runs beside the\n"
                         "published table (reports/published/<name>.csv)")
    ap.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--optimism-headline", action="store_true",
                    help="also tabulate the optimism runs' validation-selected test_auc as a loo_val Table 3\n"
                         "(intervals, paired tests), for seeds without a loo_val run of their own")
    return ap.parse_args(argv)


def shell_quote(arg: str) -> str:
    """Like shlex.quote, but a filter such as tags.x = 'y' reads as "tags.x = 'y'" rather than an escape soup."""
    if "'" in arg and not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


def default_name(a: argparse.Namespace) -> str:
    parts = [x.replace("/", "-") for x in a.experiment + a.dataset + a.protocol + a.model + a.recipe]
    if a.metric != PAPER_METRIC:
        parts.append(a.metric.replace("@", "at"))
    return "_".join(["table3"] + parts)


def main(argv: list[str] | None = None) -> Path:
    a = parse_args(argv)
    flt = RunFilter(experiments=tuple(a.experiment), datasets=tuple(a.dataset), protocols=tuple(a.protocol),
                    models=tuple(a.model), recipes=tuple(a.recipe), sweep_dir=a.sweep_dir, filter_string=a.filter)
    argv_used = sys.argv[1:] if argv is None else argv
    command = " ".join(["python runners/report.py", *map(shell_quote, argv_used)])
    if a.benchmark:
        path = write_benchmark_report(tracking_uri(a.tracking_uri), a.benchmark, a.out,
                                      a.name or f"{a.benchmark}_benchmarks", command, flt)
        print(f"report: {path}")
        return path
    report = write_report(tracking_uri(a.tracking_uri), flt, out_dir=a.out, name=a.name or default_name(a),
                          metric=a.metric, n_boot=a.n_boot, with_figures=not a.no_figures, title=a.title, note=a.note,
                          command=command,
                          optimism_headline=a.optimism_headline)
    print(f"report: {report.path}")
    for p in report.figures:
        print(f"figure: {p}")
    return report.path


if __name__ == "__main__":
    main()
