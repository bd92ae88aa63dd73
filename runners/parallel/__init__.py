"""Data-parallel training: the worker processes of one host and their job protocol (data_parallel) and the
torchrun launch over several processes or hosts (torchrun).

May import runners.step and runners.train; never a room above it (tracking, benchkit) nor a runners/ top-level module.
"""
