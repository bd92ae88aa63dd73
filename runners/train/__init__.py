"""The training loop and what it needs around the step: the loop (trainer), evaluation and its metrics
(evaluation, metrics), checkpoints (checkpoint), process-wide runtime settings and seeding (runtime), and
signal handling (interrupts).

May import runners.step; never a room above it (parallel, tracking, benchkit) nor a runners/ top-level module.
"""
