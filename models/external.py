"""A model class from outside the repository: `model=custom model.target=package.module:Class`, or
`model.target=<name>` of an installed `seqrec.models` entry point (importlib.metadata). The class goes through the
same runs, sweeps, MLflow and reports as a registered model; it is checked against the interface first.

The check (all problems in one error naming the target): a subclass of SeqRecModel (models/interface.py; a
subclass, not duck-typed: the trainer reads its class attributes and default methods) that defines `loss` and
`score` (a PointwiseModel: `logits_and_penalty`; a UserVectorModel: `user_vector` too), has a `train_format`
the trainer knows, and a constructor taking (n_users, n_items, n_categories, item_category, **params): the four
data arguments by name and every argument without a default among `params`. `full_scores` is optional (the
default chunks `score` and reads `self.n_items`).
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import re
from importlib.metadata import entry_points
from pathlib import Path
from typing import Iterable

from models.interface import PointwiseModel, SeqRecModel, UserVectorModel
from models.registry import available_models, get_model

ENTRY_POINT_GROUP = "seqrec.models"
TRAIN_FORMATS = ("pointwise", "pairwise", "sequence")  # datasets/batching.train_rows
DATA_ARGS = ("n_users", "n_items", "n_categories", "item_category")
_NAME = r"[A-Za-z_]\w*"
TARGET = re.compile(rf"^{_NAME}(\.{_NAME})*:{_NAME}(\.{_NAME})*$")
ENTRY_NAME = re.compile(r"^[A-Za-z0-9_][\w.-]*$")
EXPECTED = f"package.module:Class, or the name of a {ENTRY_POINT_GROUP!r} entry point"


def load_target(target: str) -> type:
    """The object `target` names; ValueError naming the target and what went wrong."""
    if not isinstance(target, str) or not (TARGET.match(target) or ENTRY_NAME.match(target)):
        raise ValueError(f"model.target={target!r}: expected {EXPECTED}")
    if ":" not in target:
        found = entry_points(group=ENTRY_POINT_GROUP, name=target)
        if not found:
            known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
            raise ValueError(f"model.target={target!r}: no {ENTRY_POINT_GROUP!r} entry point of that name (installed: "
                             f"{', '.join(known) or 'none'}); a class by path: {EXPECTED}")
        target = next(iter(found)).value
        if not TARGET.match(target):
            raise ValueError(f"entry point {target!r} of group {ENTRY_POINT_GROUP!r}: expected package.module:Class")
    module_name, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"model.target={target!r}: cannot import {module_name!r} ({type(e).__name__}: {e}); put its "
                         "folder on PYTHONPATH or install its package") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model.target={target!r}: {getattr(obj, '__name__', obj)!r} has no attribute {part!r}")
        obj = getattr(obj, part)
    return obj


def overrides(cls: type, base: type, method: str) -> bool:
    """Whether `cls` defines `method` itself or below `base` (not `base`'s own placeholder)."""
    return getattr(cls, method, None) is not getattr(base, method)


def interface_problems(cls: object, params: Iterable[str]) -> list[str]:
    """What `cls` lacks to run as a model with constructor keyword arguments `params` (empty: it fits)."""
    if not isinstance(cls, type) or not issubclass(cls, SeqRecModel):
        return [f"{cls!r} is not a subclass of models.interface.SeqRecModel"]
    problems = []
    if issubclass(cls, UserVectorModel) and not overrides(cls, UserVectorModel, "user_vector"):
        problems.append("no user_vector(batch) -> [B, D] (a UserVectorModel)")
    if issubclass(cls, PointwiseModel):
        if not overrides(cls, PointwiseModel, "logits_and_penalty"):
            problems.append("no logits_and_penalty(batch, candidates, penalty) (a PointwiseModel)")
    else:
        for name, signature in (("loss", "loss(batch) -> Tensor []"),
                                ("score", "score(batch, candidates [B, C]) -> [B, C]")):
            if not overrides(cls, SeqRecModel, name):
                problems.append(f"no {signature} (SeqRecModel's raises NotImplementedError)")
    if getattr(cls, "train_format", None) not in TRAIN_FORMATS:
        problems.append(f"train_format = {getattr(cls, 'train_format', None)!r}, expected one of "
                        f"{', '.join(TRAIN_FORMATS)}")
    problems += constructor_problems(cls, set(params))
    return problems


def constructor_problems(cls: type, params: set[str]) -> list[str]:
    """The constructor takes the four data arguments by name and `params` as keywords, and needs nothing else."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError) as e:
        return [f"its constructor's signature cannot be read ({e})"]
    args = signature.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in args.values())
    keyword = {n for n, p in args.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    problems = []
    missing = [a for a in DATA_ARGS if a not in keyword and not takes_any]
    if missing:
        problems.append(f"a constructor without the data argument(s) {', '.join(missing)} (expected "
                        f"__init__(self, {', '.join(DATA_ARGS)}, **params))")
    unknown = sorted(params - keyword) if not takes_any else []
    if unknown:
        problems.append(f"a constructor without the model.params argument(s) {', '.join(unknown)}")
    required = sorted(n for n in keyword - set(DATA_ARGS) - params - {"behaviours"}
                      if args[n].default is inspect.Parameter.empty)
    if required:
        problems.append(f"constructor argument(s) {', '.join(required)} have no default and are not in model.params")
    return problems


def external_model(target: str, params: Iterable[str] = ()) -> type:
    """The checked class of `target`; one ValueError naming the target and every missing piece otherwise."""
    cls = load_target(target)
    problems = interface_problems(cls, params)
    if problems:
        where = getattr(inspect.getmodule(cls), "__file__", None) if isinstance(cls, type) else None
        raise ValueError(f"model.target={target!r}{f' ({where})' if where else ''} does not fit the model interface "
                         "(models/interface.py):\n  - " + "\n  - ".join(problems))
    return cls


def model_class(name: str, target: str | None, params: Iterable[str] = ()) -> type:
    """The class a run builds: the registered model `name`, or `target`'s class (checked) under a name that is not
    a registered model's (model=custom, or any other label given by model.name)."""
    registered = available_models()
    if target is None:
        if name not in registered:
            raise ValueError(f"model.name={name!r} is not a registered model ({', '.join(registered)}) and "
                             f"model.target is not set; a class from outside the repository: model=custom "
                             f"model.target=<{EXPECTED}>")
        return get_model(name)
    if name in registered:
        raise ValueError(f"model.target={target!r} with model.name={name!r}, a registered model's name: an outside "
                         "class runs as model=custom (model.name=<label> names it in runs and reports)")
    return external_model(target, params)


def source_file(cls: type) -> tuple[str, str]:
    """(path, sha256) of the file that defines `cls`."""
    path = Path(inspect.getfile(cls)).resolve()
    return str(path), hashlib.sha256(path.read_bytes()).hexdigest()
