"""One training step and what it runs on: the training settings and their checks (settings), the optimiser and
the one step every path runs (optim.train_step), the device, precision and autocast (device), the on-device
batches and the device path's use of that step (device_step), its CUDA-graph capture and replay (cuda_graphs) and
the gradient sums between data-parallel workers (gradient_sync: GradientSync.reduce, the hook the step is handed).

The lowest room: it imports no other runners/ subpackage and no runners/ top-level module.
"""
