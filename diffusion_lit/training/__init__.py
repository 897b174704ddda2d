"""Training: the LightningModule around a DiffusionModel, its callbacks, the EMA weights, the
learning-rate schedule, atomic checkpoint writes, and resuming a run."""
