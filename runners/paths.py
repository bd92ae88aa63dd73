"""The config's names that become parts of paths (cache files, run folders): checked as safe slugs
(datasets/names.py) before anything runs, and through the `path_part` resolver where Hydra builds its run and
sweep folder names from them (conf/config.yaml), so a bad name is refused before Hydra makes a folder."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from datasets.names import check_slug

# Config keys whose values become file or folder names: the table and split caches (dataset.name), Hydra's run
# and sweep folders (model.name, dataset.name). protocol.name joins the default experiment and report names.
PATH_KEYS = ("model.name", "dataset.name", "protocol.name")


def check_path_names(cfg: DictConfig) -> None:
    """Each of PATH_KEYS is a safe slug (ValueError naming the key and the allowed characters)."""
    for key in PATH_KEYS:
        check_slug(key, OmegaConf.select(cfg, key))


def register_path_resolver() -> None:
    """`${path_part:<key>,${<key>}}`: the value, once check_slug accepts it (Hydra's folder names)."""
    if not OmegaConf.has_resolver("path_part"):
        OmegaConf.register_new_resolver("path_part", lambda key, value: check_slug(str(key), value))
