"""The report's PNGs (matplotlib, Agg): AUC vs training step, AUC with 95% CIs against the paper, throughput, and
the optimism diagnostic (validation and test AUC along training).

Inputs are the DataFrames reports/runs.py reads from MLflow and reports/cells.py summarises; nothing here queries
MLflow or trains. Each PNG is written atomically, like the markdown beside it.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from datasets.atomic import atomic_path  # noqa: E402
from reports.labels import (OTHER_MODELS, PAPER_MODELS, dataset_order,  # noqa: E402
                            plain_column_title, plain_label,
                            model_order, paper_column_of, paper_value)

_ALL = list(PAPER_MODELS) + list(OTHER_MODELS)
plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "figure.dpi": 110})


def model_color(model: str) -> tuple[float, float, float, float]:
    """The same colour for a model in every figure (tab10 has exactly the ten registered models)."""
    i = _ALL.index(model) if model in _ALL else len(_ALL) + sum(map(ord, model))
    return plt.get_cmap("tab10" if i < 10 else "tab20")(i % (10 if i < 10 else 20))


def _grid(n: int, width: float, height: float, max_cols: int = 3):
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _save(fig, path: Path) -> Path:
    """Lay out, write the PNG atomically (the temporary keeps the .png suffix matplotlib reads the format from) and
    free the figure."""
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
    return path


def curves_figure(picked: pd.DataFrame, curves: pd.DataFrame, path: Path) -> Path | None:
    """Selection AUC vs optimiser step: one panel per dataset, one line per model (mean over seeds, thin = a seed)."""
    done = picked[picked["status"] == "FINISHED"]
    if done.empty or curves.empty:
        return None
    datasets = dataset_order(done.drop_duplicates("dataset"))
    fig, axes = _grid(len(datasets), 5.2, 3.8)
    handles = {}
    for ax, d in zip(axes, datasets):
        sub = done[done["dataset"] == d]
        keys = []
        for m in model_order(set(sub["model"])):
            runs = sub[sub["model"] == m]
            if runs.empty:
                continue
            select = "valid" if (runs["protocol"] == "loo_val").all() else "test"
            key = f"curve/{select}_auc"
            keys.append(select)
            c = curves[(curves["run_id"].isin(runs["run_id"])) & (curves["key"] == key)]
            if c.empty:
                continue
            for _, one in c.groupby("run_id"):
                if len(runs) > 1:
                    ax.plot(one["step"], one["value"], color=model_color(m), lw=0.7, alpha=0.35)
            mean = c.groupby("step")["value"].mean()
            (h,) = ax.plot(mean.index, mean.values, color=model_color(m), lw=1.8,
                           marker="o" if len(mean) < 15 else None, ms=3, label=plain_label(m))
            handles[m] = h
        ax.set_title(plain_column_title(d, paper_column_of(d, sub["paper_column"].iloc[0])))
        ax.set_xlabel("optimiser step (batch sizes differ per model)")
        ax.set_ylabel(f"{'/'.join(sorted(set(keys)))} AUC (per-user)")
        ax.grid(alpha=0.3)
    order = [m for m in model_order(set(handles)) if m in handles]
    fig.legend([handles[m] for m in order], [plain_label(m) for m in order], loc="center left",
               bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle("AUC at each evaluation (thick: mean over seeds; thin: one seed)")
    return _save(fig, path)


def auc_figure(cells: pd.DataFrame, col_stats: dict, metric: str, path: Path) -> Path | None:
    """Measured value per model with its bootstrap 95% CI (or +-sd over seeds without outcomes), paper value as a
    black diamond: one panel per dataset."""
    have = cells[cells["n"] > 0]
    if have.empty:
        return None
    base = 0.5 if "auc" in metric else 0.0   # AUC bars start at chance level, so lengths compare
    datasets = dataset_order(have)
    n_models = max(len(model_order(set(have[have["dataset"] == d]["model"]))) for d in datasets)
    fig, axes = _grid(len(datasets), 5.6, 0.42 * n_models + 1.6)
    for ax, d in zip(axes, datasets):
        sub = have[have["dataset"] == d].set_index("model")
        stats = next((v for k, v in col_stats.items() if k[2] == d), None)
        pcol = paper_column_of(d, sub["paper_column"].iloc[0])
        models = [m for m in model_order(set(sub.index)) if m in sub.index or paper_value(m, pcol, metric)]
        ys = np.arange(len(models))[::-1]
        lows: list[float] = [base]
        highs: list[float] = []
        for y, m in zip(ys, models):
            pv = paper_value(m, pcol, metric)
            if m in sub.index:
                mean = sub.loc[m, "mean"]
                if stats is not None and m in stats.ci:
                    lo, hi = stats.ci[m].lo, stats.ci[m].hi
                else:
                    sd = sub.loc[m, "sd"] if not math.isnan(sub.loc[m, "sd"]) else 0.0
                    lo, hi = mean - sd, mean + sd
                ax.barh(y, mean - base, left=base, color=model_color(m), alpha=0.85, height=0.62)
                ax.errorbar(mean, y, xerr=[[mean - lo], [hi - mean]], fmt="none", ecolor="black", capsize=3, lw=1)
                ax.text(hi, y, f"  {mean:.4f}", va="center", fontsize=8)
                lows.append(lo)
                highs.append(hi)
            else:
                ax.text(0.01, y, "  not run", va="center", fontsize=8, color="gray", transform=ax.get_yaxis_transform())
            if pv is not None:
                ax.plot(pv, y, marker="D", color="black", ms=6, ls="none")
                highs.append(pv)
        lo, hi = min(lows), max(highs)
        ax.set_xlim(lo - (0.01 if lo < base else 0.0),
                    min(1.0, hi + max(0.02, 0.12 * (hi - lo))) if hi <= 1.0 else hi * 1.1)
        ax.set_yticks(ys, [plain_label(m) for m in models])
        whiskers = "95% CI" if stats is not None else "± sd over seeds"
        ax.set_xlabel(f"{metric} (bars from {base:g}{' = chance' if base else ''}; whiskers: {whiskers}; ◆ paper)")
        ax.set_title(plain_column_title(d, pcol))
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{metric}: ours" + (" with 95% bootstrap CIs over users" if col_stats else "")
                 + " vs ATRank Table 3")
    return _save(fig, path)


def throughput_figure(picked: pd.DataFrame, path: Path) -> Path | None:
    """Training examples per second (mean over seeds) per model, log scale: one panel per dataset."""
    done = picked[(picked["status"] == "FINISHED") & picked["metrics.examples_per_s"].notna()]
    if done.empty:
        return None
    datasets = dataset_order(done.drop_duplicates("dataset"))
    n_models = done.groupby("dataset")["model"].nunique().max()
    fig, axes = _grid(len(datasets), 5.2, 0.42 * n_models + 1.6)
    for ax, d in zip(axes, datasets):
        sub = done[done["dataset"] == d]
        rate = sub.groupby("model")["metrics.examples_per_s"].mean()
        models = [m for m in model_order(set(rate.index)) if m in rate.index]
        ys = np.arange(len(models))[::-1]
        ax.barh(ys, [rate[m] for m in models], color=[model_color(m) for m in models], height=0.62)
        for y, m in zip(ys, models):
            ax.text(rate[m], y, f" {rate[m]:,.0f}", va="center", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlim(rate.min() / 2, rate.max() * 8)
        ax.set_yticks(ys, [plain_label(m) for m in models])
        ax.set_xlabel("training examples / s (log scale)")
        threads = ", ".join(sorted(set(sub["tags.torch_threads"]) - {""})) if "tags.torch_threads" in sub else ""
        ax.set_title(f"{d}" + (f" ({threads} torch thread(s))" if threads else ""))
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Training throughput (shared CPU: compare within a report only)")
    return _save(fig, path)


def optimism_figure(picked: pd.DataFrame, curves: pd.DataFrame | None, path: Path) -> Path | None:
    """DIAGNOSTIC (protocol=optimism): per model, validation and test AUC along training (one line per seed), the
    validation-selected evaluation (circle) and the best test AUC seen (star): their vertical gap is the optimism."""
    opt = picked[(picked["protocol"] == "optimism") & (picked["status"] == "FINISHED")]
    if opt.empty or curves is None or curves.empty:
        return None
    models = {d: set(opt[opt["dataset"] == d]["model"]) for d in set(opt["dataset"])}
    panels = [(d, m) for d in dataset_order(opt.drop_duplicates("dataset")) for m in model_order(models[d])
              if m in models[d]]
    fig, axes = _grid(len(panels), 4.0, 3.3, max_cols=4)
    handles: dict[str, object] = {}
    for ax, (d, m) in zip(axes, panels):
        runs = opt[(opt["dataset"] == d) & (opt["model"] == m)]
        for _, r in runs.iterrows():
            c = curves[curves["run_id"] == r["run_id"]]
            t = c[c["key"] == "curve/test_auc"].sort_values("step")
            v = c[c["key"] == "curve/valid_auc"].sort_values("step")
            if len(v):
                (handles["validation AUC"],) = ax.plot(v["step"], v["value"], ls="--", color="gray", lw=1.3,
                                                        marker="o" if len(v) < 15 else None, ms=2.5)
            if len(t):
                (handles["test AUC"],) = ax.plot(t["step"], t["value"], color=model_color(m), lw=1.8,
                                                  marker="o" if len(t) < 15 else None, ms=2.5)
                at = t[t["step"] == r.get("metrics.best_step")]
                if len(at):
                    (handles["test AUC at the validation-selected step"],) = ax.plot(
                        at["step"].iloc[0], at["value"].iloc[0], "o", ms=10, mfc="none", mec="black", mew=1.5)
                i = int(np.argmax(t["value"].to_numpy()))
                (handles["best test AUC seen (test-set selection)"],) = ax.plot(
                    t["step"].iloc[i], t["value"].iloc[i], "*", ms=11, color="black")
        o = runs["metrics.optimism"].dropna() if "metrics.optimism" in runs else pd.Series(dtype=float)
        ax.set_title(f"{plain_label(m)} ({d})\noptimism " + (f"{o.mean():+.4f}" if len(o) else "not logged")
                     + (f" (mean of {len(o)} seeds)" if len(o) > 1 else ""), fontsize=10)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("AUC (per-user)")
        ax.grid(alpha=0.3)
    if handles:
        from matplotlib.lines import Line2D

        if "test AUC" in handles:   # the panels colour test AUC by model; the legend shows a neutral line
            handles["test AUC"] = Line2D([], [], color="black", lw=1.8, label="test AUC (colour: model)")
        names = [("test AUC (colour: model)" if k == "test AUC" else k) for k in handles]
        fig.legend(list(handles.values()), names, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=2, frameon=False)
    fig.suptitle("DIAGNOSTIC (protocol=optimism, not a headline number): test AUC tracked along training")
    return _save(fig, path)


def make_figures(picked: pd.DataFrame, cells: pd.DataFrame, curves: pd.DataFrame, col_stats: dict, *, metric: str,
                 out_dir: Path, stem: str) -> list[Path]:
    """One Table 3's figures, `<stem>_curves.png`, `<stem>_auc.png`, `<stem>_throughput.png`: those that have data."""
    out_dir = Path(out_dir)
    made = [curves_figure(picked, curves, out_dir / f"{stem}_curves.png"),
            auc_figure(cells, col_stats, metric, out_dir / f"{stem}_auc.png"),
            throughput_figure(picked, out_dir / f"{stem}_throughput.png")]
    return [p for p in made if p is not None]
