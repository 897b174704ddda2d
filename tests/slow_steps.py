"""A callback that slows each training step, so a test can kill a run part-way through."""

import time

import lightning as L


class SlowSteps(L.Callback):
    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_batch_end(self, *args) -> None:
        time.sleep(self.seconds)
