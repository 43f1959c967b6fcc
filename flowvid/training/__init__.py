"""Training: the LightningModule, EMA, optimizer and schedule, checkpoints, the run function."""
