"""Data-parallel training: the worker processes of one host and their job protocol (data_parallel) and the
torchrun launch over several processes or hosts (torchrun; world: where this process stands in one, standard
library only, as config.py checks it; lifeline: dying with the parent).

May import runners.step and runners.train; never a room above it (tracking, benchkit) nor a runners/ top-level module.
"""
