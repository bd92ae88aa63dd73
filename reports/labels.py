"""What the report calls things and in which order it shows them: model labels, the paper's Table 3, column titles,
dataset and model order, and the two number formats every section shares.

Figures and markdown both read these, so they live here and import nothing else from reports/.
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # only for the hints: the labels need no pandas
    import pandas as pd

PAPER_MODELS = ("bpr", "bilstm", "bilstm_att", "cnn", "atrank")    # Table 3's rows, in its order
OTHER_MODELS = ("din", "attrec", "gru4rec", "sasrec", "pop", "caser", "bert4rec")  # newer models last (colours kept)
MODEL_LABELS = {"bpr": "BPR", "bilstm": "Bi-LSTM", "bilstm_att": "Bi-LSTM + Attention", "cnn": "CNN + Max Pooling",
                "atrank": "ATRank", "din": "DIN", "attrec": "AttRec", "gru4rec": "GRU4Rec", "sasrec": "SASRec",
                "pop": "POP", "caser": "Caser", "bert4rec": "BERT4Rec"}
PAPER_METRIC = "test_auc"    # Table 3 reports the per-user AUC, mean of 1[score_pos > score_neg]
PAPER_TABLE3 = {             # ATRank (Zhou et al., AAAI 2018), Table 3: the numbers to regenerate
    "Electro.": {"bpr": 0.7982, "bilstm": 0.8757, "bilstm_att": 0.8769, "cnn": 0.8804, "atrank": 0.8921},
    "Clothe.": {"bpr": 0.7061, "bilstm": 0.7869, "bilstm_att": 0.7835, "cnn": 0.7786, "atrank": 0.7905},
}
PAPER_COLUMN_ORDER = ("Electro.", "Clothe.")
DATASET_PAPER_COLUMN = {"electro": "Electro.", "clothing": "Clothe.", "clothing_seq": "Clothe."}  # absent columns
DIAGNOSTIC_PROTOCOLS = ("optimism",)     # never a Table 3 table, only their own clearly labelled section
DASH = "—"


# Characters that markdown or HTML would read as markup; `_` only where it could open or close emphasis (an
# intraword underscore, as in clothing_seq, never does), so the usual names print unchanged.
MARKUP = re.compile(r"[\\`*\[\]|~<>&#]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
HTML_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def md_text(text: object) -> str:
    """`text` as literal markdown: HTML's <, > and & as entities, markdown's markup characters backslash-escaped
    (a name or tag from MLflow can hold anything)."""
    return MARKUP.sub(lambda m: HTML_ENTITIES.get(m.group(), "\\" + m.group()), str(text))


def md_code(text: object) -> str:
    """`text` as an inline code span, fenced with more backticks than it holds in a row."""
    text = str(text)
    ticks = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{ticks} {text} {ticks}" if len(ticks) > 1 else f"`{text}`"


def plain_label(model: str) -> str:
    """The paper's name of a model, or the registry name for a model the paper does not have; a variant
    ("atrank [items_only]", tag `variant`) keeps its bracket after the model's name."""
    base, bracket, rest = model.partition(" [")
    return MODEL_LABELS.get(base, base) + (f" [{rest}" if bracket else "")


def label(model: str) -> str:
    """plain_label as markdown: the model's and the variant's names escaped, the variant's bracket kept."""
    base, bracket, rest = model.partition(" [")
    if bracket and rest.endswith("]"):
        return f"{md_text(MODEL_LABELS.get(base, base))} [{md_text(rest[:-1])}]"
    return md_text(plain_label(model))


def model_order(models: set[str]) -> list[str]:
    """Table 3's five rows always (absent ones show a dash), then the peers and any other model that has runs."""
    known = list(PAPER_MODELS) + [m for m in OTHER_MODELS if m in models]
    return known + sorted((m for m in models if m not in known), key=lambda m: (m.partition(" [")[0] not in known, m))


def paper_column_of(dataset: str, tag: str | None = None) -> str | None:
    """The Table 3 column a dataset stands for: its `paper_column` tag when set, else the known datasets' column."""
    tag = tag if tag not in (None, "", "None", "null", "nan") else None
    return tag or DATASET_PAPER_COLUMN.get(dataset)


def dataset_order(cells: pd.DataFrame, requested: tuple[str, ...] = ()) -> list[str]:
    """Electro. columns first, then Clothe., then the other datasets alphabetically (requested ones even if empty).
    `cells` is any frame with `dataset` and `paper_column` columns."""
    names = set(cells["dataset"]) | set(requested)
    tags = dict(zip(cells["dataset"], cells["paper_column"]))

    def key(d: str) -> tuple:
        col = paper_column_of(d, tags.get(d))
        return (PAPER_COLUMN_ORDER.index(col) if col in PAPER_COLUMN_ORDER else len(PAPER_COLUMN_ORDER), d)
    return sorted(names, key=key)


def paper_value(model: str, paper_column: str | None, metric: str) -> float | None:
    """The paper's number for this cell; None for another metric or a column the paper does not have."""
    if metric != PAPER_METRIC or paper_column is None:
        return None
    return PAPER_TABLE3.get(paper_column, {}).get(model)


def plain_column_title(dataset: str, paper_column: str | None) -> str:
    """'Clothe. (clothing_seq)' for a dataset standing for a paper column, else the dataset's name."""
    return f"{paper_column} ({dataset})" if paper_column else dataset


def column_title(dataset: str, paper_column: str | None) -> str:
    """plain_column_title as markdown (names escaped)."""
    return md_text(plain_column_title(dataset, paper_column))


def fmt_num(x: float | None, fmt: str = "{:.0f}") -> str:
    """A number, or a dash for a missing one (None or NaN)."""
    return DASH if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def fmt_p(p: float) -> str:
    """A p-value to three decimals, '<0.001' below that, a dash when there is none."""
    return DASH if p is None or math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")
