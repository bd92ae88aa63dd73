"""The two gates of a run. Before training: every count is one that trains, evaluates and measures something,
every model size is >= 1, and every config key is one its group declares (a `+group.typo=` would be ignored).
Before FINISHED: a run that took no step, has no trainable parameter or measured a non-finite headline metric is
no result, so it fails.

Plain arguments only (dicts of config values, key sets); runners/config.check_config reads the config and calls
these. The checks before training raise ValueError naming every offending key and what was expected; the ones
before FINISHED raise RuntimeError (runners/run.py records the run as FAILED with it).
"""
from __future__ import annotations

import difflib
import functools
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from runners.train.selection import SELECT_METRICS

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# Counts: key -> (least value, null allowed, what null / the least value means). eval_every, batch_size, epochs,
# max_steps, bucket_chunk and replicate_width are runners/step/settings.check_settings'.
COUNTS: dict[str, tuple[int, bool, str]] = {
    "seed": (0, False, ""),
    "trainer.eval_batch_size": (1, False, ""),
    "trainer.patience": (1, True, "null = never stop early"),
    "trainer.checkpoint_every": (0, False, "0 = only at the end"),
    "trainer.num_threads": (1, True, "null = the CPUs shared out between the processes"),
    "trainer.processes": (1, False, ""),
    "trainer.debug_nan_at_step": (1, True, "null = off"),
    "trainer.debug_worker_raise_at_step": (1, True, "null = off"),
    "model.lr_decay_step": (1, True, "null = no schedule"),
    "model.max_len": (1, True, "null = the whole history"),
    "model.reference_epochs": (1, True, "null = model.epochs"),
    "protocol.split_seed": (0, False, ""),
    "protocol.test_access_limit": (1, True, "null = no limit"),
    "protocol.eval_negatives": (0, False, "0 = none"),
    "protocol.full_ranking_users": (-1, False, "-1 = all users, 0 = none"),
    "protocol.full_ranking_target_aware_users": (-1, False, "-1 = all users, 0 = none"),
}
CHOICES: dict[str, tuple[str, ...]] = {"protocol.select_on": ("test", "valid"),
                                       "protocol.select_metric": SELECT_METRICS,
                                       "protocol.split": ("paper", "loo_val", "temporal"),
                                       "protocol.eval_negatives_kind": ("uniform", "popularity"),
                                       "protocol.eval_negatives_pool": ("sequence", "history"),
                                       "protocol.ties": ("pessimistic", "random", "optimistic"),
                                       "protocol.full_ranking_history": ("exclude", "zero")}

# Model constructor arguments that size a layer: each must be an integer >= 1 (0 builds an empty layer: a model
# with nothing to learn, or one that learns without its history). Lists size one layer per entry.
SIZE_PARAMS = frozenset({"dim", "item_dim", "cat_dim", "hidden", "n_heads", "n_blocks", "n_layers", "n_filters",
                         "max_width", "time_slots", "L", "T", "ref_len", "max_len", "pooled_dense",
                         "max_predictions", "n_neg"})
SIZE_LISTS = frozenset({"att_hidden", "mlp_hidden"})
NONEMPTY_LISTS = frozenset({"att_hidden"})  # DIN's activation unit needs a hidden layer; its top MLP may have none
ROUNDS_PARAMS = frozenset({"neg_rounds"})  # redraws of a negative that is a positive: 0 = none
# Filter counts of a layer the model can do without (Caser's ablations): integers >= 0, 0 = that layer off.
OPTIONAL_LAYERS = {"n_v": "0 = no vertical convolution", "n_h": "0 = no horizontal convolutions"}
SAMPLE_PARAMS = frozenset({"gbce_negatives"})  # negatives drawn per training step: >= 1
# The model's data arguments (from the table), never config keys.
DATA_ARGS = frozenset({"self", "n_users", "n_items", "n_categories", "item_category", "behaviours"})


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def count_problem(key: str, value: Any, least: int, nullable: bool, meaning: str = "") -> str | None:
    """The complaint about `key`'s value, or None when it is an integer >= `least` (or null where allowed)."""
    if value is None and nullable or is_int(value) and value >= least:
        return None
    expected = f"an integer >= {least}" + (" or null" if nullable else "")
    return f"{key} must be {expected}{f' ({meaning})' if meaning else ''}, got {value!r}"


def check_counts(values: Mapping[str, Any]) -> None:
    """`values`: dotted key -> value (keys absent from a config are skipped: e.g. model.reference_epochs)."""
    problems = [p for key, (least, nullable, meaning) in COUNTS.items() if key in values
                and (p := count_problem(key, values[key], least, nullable, meaning))]
    problems += [f"{key} must be one of {', '.join(choices)}, got {values[key]!r}"
                 for key, choices in CHOICES.items() if key in values and values[key] not in choices]
    if problems:
        raise ValueError("invalid settings:\n  " + "\n  ".join(problems))


def check_selection(metric: str, eval_negatives: int, full_ranking_users: int) -> None:
    """A selection metric has what it scores: sampled negatives for sampled_*, ranked users for full_*."""
    if metric.startswith("sampled_") and not eval_negatives:
        raise ValueError(f"protocol.select_metric={metric} scores against sampled negatives, but "
                         f"protocol.eval_negatives={eval_negatives}: set it >= 1 (e.g. 100)")
    if metric.startswith("full_") and not full_ranking_users:
        raise ValueError(f"protocol.select_metric={metric} ranks the whole catalogue for the selection users, but "
                         f"protocol.full_ranking_users={full_ranking_users}: set it to -1 (all) or a count >= 1")


def check_train_window(params: Mapping[str, Any], batch_max_len: int | None) -> None:
    """A model that draws its training window from the whole sequence (BERT4Rec's train_window=random) gets
    batches longer than that window, or the draw has nothing to draw from."""
    window = params.get("max_len")
    if params.get("train_window") == "random" and batch_max_len is not None and is_int(window) \
            and batch_max_len <= window:
        raise ValueError(f"model.params.train_window=random draws {window} consecutive items from anywhere in the "
                         f"training sequence, but model.max_len={batch_max_len} cuts every batch to the last "
                         f"{batch_max_len} items: set model.max_len=null (the whole sequence)")


def check_model_sizes(params: Mapping[str, Any], where: str = "model.params") -> None:
    """Every layer size of the model's constructor arguments is >= 1; dropout is in [0, 1)."""
    problems = []
    for key, value in params.items():
        name = f"{where}.{key}"
        if key in SIZE_PARAMS:
            problems.append(count_problem(name, value, 1, key == "pooled_dense",
                                          "null = none" if key == "pooled_dense" else "a layer size"))
        elif key in ROUNDS_PARAMS:
            problems.append(count_problem(name, value, 0, False, "0 = no redraw"))
        elif key in OPTIONAL_LAYERS:
            problems.append(count_problem(name, value, 0, False, OPTIONAL_LAYERS[key]))
        elif key in SAMPLE_PARAMS:
            problems.append(count_problem(name, value, 1, False, "negatives per step"))
        elif key in SIZE_LISTS:
            sizes = list(value) if isinstance(value, (list, tuple)) else None
            if sizes is None or not all(is_int(v) and v >= 1 for v in sizes) or key in NONEMPTY_LISTS and not sizes:
                least = "one or more" if key in NONEMPTY_LISTS else "a list of"
                problems.append(f"{name} must be {least} layer sizes, each an integer >= 1, got {value!r}")
        elif key in ("dropout", "attn_dropout") and not (isinstance(value, (int, float)) and 0 <= value < 1):
            problems.append(f"{name} must be a rate in [0, 1), got {value!r}")
    problems = [p for p in problems if p]
    if problems:
        raise ValueError("invalid model sizes (a zero-sized layer has nothing to learn):\n  " + "\n  ".join(problems))


@functools.lru_cache(maxsize=None)
def declared_keys(group: str) -> frozenset[str]:
    """The top-level keys the yaml files of conf/<group>/ declare, all files together, and the keys the
    experiments (conf/experiment/*.yaml, global package) declare under `group` (e.g. tune_atrank's lookup table)."""
    from omegaconf import OmegaConf

    keys: set[str] = set()
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        keys |= set(OmegaConf.load(path)) - {"defaults"}
    for path in sorted((CONF_DIR / "experiment").glob("*.yaml")):
        keys |= set(OmegaConf.load(path).get(group) or {})
    return frozenset(keys)


def unknown_problem(where: str, given: Iterable[str], valid: Iterable[str], source: str) -> str | None:
    """The complaint about the keys of `given` that `valid` lacks, each with the nearest valid key, or None."""
    valid = sorted(set(valid))
    unknown = sorted(set(given) - set(valid))
    if not unknown:
        return None
    prefix = f"{where}." if where else ""
    hints = [f"{prefix}{k}: did you mean {prefix}{near[0]}?" for k in unknown
             if (near := difflib.get_close_matches(k, valid, n=1))]
    return (f"unknown {where or 'top-level'} setting(s) {unknown}" + (f" ({'; '.join(hints)})" if hints else "")
            + f"; valid there ({source}): {', '.join(prefix + k for k in valid)}")


def check_known_keys(keys: Mapping[str, Iterable[str]], valid: Mapping[str, tuple[Iterable[str], str]]) -> None:
    """`keys`: where (e.g. "protocol", "model.params") -> the keys a config has there; `valid`: where -> (the keys
    it may have, which files or code declare them). Raises naming every unknown key."""
    problems = [p for where, given in keys.items()
                if (p := unknown_problem(where, given, *valid[where]))]
    if problems:
        raise ValueError("\n".join(problems))


def check_outcome(steps: int, trainable: int, gradient_free: bool, metrics: Mapping[str, float]) -> None:
    """Before a run is FINISHED: it took >= 1 optimiser step, a model that learns by gradient has trainable
    parameters, and every headline metric in `metrics` is finite; else RuntimeError (the run is FAILED)."""
    problems = []
    if steps < 1:
        problems.append(f"it trained {steps} optimiser steps (trainer.patience / max_steps / epochs)")
    if trainable < 1 and not gradient_free:
        problems.append(f"the model has {trainable} trainable parameters (model.params sizes)")
    problems += [f"{k} = {v} is not a finite number" for k, v in metrics.items() if not math.isfinite(v)]
    if problems:
        raise RuntimeError("no result, the run is FAILED: " + "; ".join(problems))


def check_parameters(model: torch.nn.Module, gradient_free: bool) -> int:
    """Before training: the model's trainable parameter count; a model that learns by gradient must have some,
    and none of them may be zero-sized (a layer of width 0). RuntimeError otherwise."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    empty = [f"{n} {tuple(p.shape)}" for n, p in trainable if p.numel() == 0]
    count = sum(p.numel() for _, p in trainable)
    if not gradient_free and (count == 0 or empty):
        zero_sized = f", zero-sized: {', '.join(empty)}" if empty else ""
        raise RuntimeError(f"no result, the run is FAILED: the model has {count} trainable parameters{zero_sized} "
                           "(check the sizes in model.params): nothing to train")
    return count
