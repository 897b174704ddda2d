"""A callback the DDP tests add from the command line: every rank writes what it saw."""

import json
from pathlib import Path

import lightning as L


class RankProbe(L.Callback):
    def __init__(self, out_dir: str):
        self.out_dir, self.losses = Path(out_dir), []

    def on_validation_epoch_start(self, trainer, pl_module):
        self.losses = []

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ):
        self.losses.append(float(outputs))

    def on_train_end(self, trainer, pl_module):
        record = {
            "local_val_losses": self.losses,
            "val/loss": float(trainer.callback_metrics["val/loss"]),
            "world_size": trainer.world_size,
            "node_rank": trainer.node_rank,
        }
        path = self.out_dir / f"probe_rank{trainer.global_rank}.json"
        path.write_text(json.dumps(record))


def probed(run_dir: Path) -> list[str]:
    """The overrides of a run into ``run_dir`` whose every rank writes its probe there."""
    return [
        "+callbacks.probe._target_=ddp_probe.RankProbe",
        f"+callbacks.probe.out_dir={run_dir}",
        f"hydra.run.dir={run_dir}",
    ]


def read_probes(run_dir: Path, ranks: int = 2) -> list[dict]:
    return [json.loads((run_dir / f"probe_rank{r}.json").read_text()) for r in range(ranks)]
