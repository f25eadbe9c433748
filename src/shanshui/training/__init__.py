"""Training NADM motion modules: config, step, loop, checkpoints, latent cache (see docs/training.md)."""
