"""Tracking and sweeps: the MLflow store, hashes and tags (tracking), sweep parent runs and job statuses
(sweep_runs), the lease that keeps two jobs of one config apart (lease) and the Hydra callbacks (callbacks).

May import runners.step, runners.train and runners.parallel; never runners.benchkit nor a runners/ top-level module.
"""
