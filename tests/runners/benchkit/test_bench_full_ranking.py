"""runners/bench.py --full-ranking: every test user of a shipped dataset ranked, the figures printed (no timing
assertions: timings depend on the machine)."""
from __future__ import annotations

import re

import torch

from runners.bench import main


def test_full_ranking_bench_ranks_every_test_user_and_prints_its_figures(tmp_path, capsys):
    before = torch.get_num_threads()
    status = main(["--full-ranking", "--model", "sasrec", "--dataset", "lastfm", "--repeats", "2", "--threads", "1",
                   f"paths.cache_dir={tmp_path / 'cache'}", "model.params.dim=16", "protocol.ties=random"])
    torch.set_num_threads(before)  # the bench sets the process's thread count
    out = capsys.readouterr().out
    assert status == 0, out
    assert "full ranking: sasrec on lastfm, 1,090 users x 3,646 items, ties random, history exclude, " \
           "1 torch thread(s)" in out  # LastFM: every user has a test row
    seconds = re.search(r"seconds ([\d.]+), ([\d.]+); median ([\d.]+) s, ([\d,]+) users/s", out)
    assert seconds and all(float(x.replace(",", "")) > 0 for x in seconds.groups())
    assert "process CPU seconds" in out and "CPU: " in out and "bench --full-ranking: " in out
