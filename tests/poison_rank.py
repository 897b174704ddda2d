"""A callback the DDP test adds from the command line: one rank's batch becomes NaN at a step."""

import lightning as L


class PoisonRank(L.Callback):
    def __init__(self, rank: int, step: int):
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            batch[0].fill_(float("nan"))
