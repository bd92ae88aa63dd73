"""reports/benchmarks.py: the published S3Rec figures load whole, and measured runs line up beside them."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reports.benchmarks import METRICS, cells, measured, published, render

pytestmark = pytest.mark.unit


def test_published_s3rec_table_is_whole():
    pub = published("s3rec")
    assert len(pub) == 2 * 4 * 6 * 6  # sampled and full, 4 datasets, 6 metrics, 6 models
    assert set(pub["dataset"]) == {"sports", "toys", "yelp", "lastfm"}
    assert set(pub["model"]) == {"pop", "gru4rec", "caser", "sasrec", "bert4rec", "s3rec"}
    assert pub["value"].between(0, 1).all()
    for evaluation, names in METRICS.items():
        assert set(pub.loc[pub["evaluation"] == evaluation, "metric"]) == set(names)
    row = pub[(pub.dataset == "sports") & (pub.evaluation == "sampled") & (pub.metric == "hr_10") & (pub.model == "sasrec")]
    assert row["value"].item() == pytest.approx(0.4622)


def fake_runs() -> pd.DataFrame:
    rows = []
    for model, seed, hr10 in (("sasrec", "0", 0.45), ("sasrec", "1", 0.47), ("pop [optimistic_ties]", "0", 0.34)):
        rows.append({"dataset": "sports", "model": model, "seed": seed, "metrics.test_sampled_hr_10": hr10,
                     "metrics.test_full_ndcg_20": 0.02, "metrics.wall_time_s": 60.0, "params.protocol.ties":
                     "optimistic" if "optimistic" in model else "pessimistic", "params.protocol.eval_negatives": "99"})
    return pd.DataFrame(rows)


def test_cells_average_seeds_and_find_the_published_column_of_a_variant():
    got = cells(measured(fake_runs()), published("s3rec"))
    sas = got[("sports", "sasrec", "sampled", "hr_10")]
    assert (sas.n, sas.mean, sas.published) == (2, pytest.approx(0.46), pytest.approx(0.4622))
    assert sas.sd == pytest.approx(np.std([0.45, 0.47], ddof=1))
    assert sas.diff == pytest.approx(0.46 - 0.4622)
    pop = got[("sports", "pop [optimistic_ties]", "sampled", "hr_10")]
    assert (pop.n, pop.published) == (1, pytest.approx(0.3423))
    assert ("sports", "sasrec", "sampled", "mrr") not in got  # not measured: no cell


def test_render_names_each_cell_measured_published_and_difference():
    text = render(cells(measured(fake_runs()), published("s3rec")), fake_runs(), "t", "cmd")
    assert "0.4600 ± 0.0141 / 0.4622 (-0.0022)" in text
    assert "| pop \\[optimistic_ties\\] | 1 |" in text  # markdown-escaped
    assert "## sports\n" in text and "### Full metrics" in text
    assert "`protocol.eval_negatives` = 99, " in text and "`protocol.ties` = optimistic/pessimistic" in text
