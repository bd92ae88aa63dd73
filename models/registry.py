"""Model registry: a name -> class dict, filled by the @register decorator in each model file."""
from __future__ import annotations

import importlib

MODELS: dict[str, type] = {}

# The model files, imported on first lookup so that `register` has run for each of them.
MODEL_MODULES = ("pop", "bpr", "bilstm", "bilstm_att", "cnn", "din", "attrec", "atrank", "gru4rec", "sasrec",
                 "bert4rec", "caser")


def register(name: str):
    def wrap(cls: type) -> type:
        if name in MODELS:
            raise ValueError(f"model name {name!r} is registered twice ({MODELS[name].__name__}, {cls.__name__})")
        MODELS[name] = cls
        cls.name = name
        return cls

    return wrap


_all_imported = False


def _import_all() -> None:
    global _all_imported
    if _all_imported:
        return
    _all_imported = True
    for module in MODEL_MODULES:
        try:
            importlib.import_module(f"models.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"models.{module}":
                raise


def get_model(name: str) -> type:
    _import_all()
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; registered: {sorted(MODELS)}")
    return MODELS[name]


def available_models() -> list[str]:
    _import_all()
    return sorted(MODELS)
