"""The benchmark tools' internals (runners/bench.py and runners/gpu_check.py are the entry points): one timed
measurement (bench_measure), the recipes and the child processes that run them (bench_paths) and the tables
(bench_tables).

The highest room: may import every other runners/ subpackage and runners.config (the recipes translate the config
as a run does); never an entry point.
"""
