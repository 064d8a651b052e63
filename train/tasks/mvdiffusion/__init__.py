"""The multi-view diffusion task: its training, evaluation and metrics."""
