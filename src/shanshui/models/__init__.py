"""Models: the NADM motion module on top of diffusers' UNetMotionModel, its loaders, the noise adapter."""
