"""One training step and what it runs on: the training settings and their checks (settings), the optimiser and
the plain step (optim), the device, precision and autocast (device), the on-device batches and step (device_step),
the CUDA-graph replay of the step (cuda_graphs) and the gradient sums between data-parallel workers (gradient_sync).

The lowest room: it imports no other runners/ subpackage and no runners/ top-level module.
"""
