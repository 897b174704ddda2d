"""Batches that never wait on a loader (``data.resident=true``): a dataset small enough to keep
whole (the bundled digits, MNIST and Fashion-MNIST are a few MB at their sizes) is decoded and
transformed once, its images, labels and caption positions kept as tensors on the training
device, and each batch is gathered there by index, in the order the sampler gives: the batches
a DataLoader over the same dataset and sampler yields, with no workers, copies or pinning. Its
position inside an epoch (batches yielded) is saved in checkpoints, as torchdata's
``StatefulDataLoader`` saves its own, so a resumed run sees the batches it would have seen."""

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler, SequentialSampler


class ResidentLoader:
    """Batches of ``batch_size`` (the last one smaller) of ``dataset``'s items in ``sampler``'s
    order (in order without one), gathered from tensors on ``device``. ``dataset`` yields
    tuples of tensors (or numbers) of the same shape for every item, and no random transform:
    each item is read once."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        sampler: Sampler | None = None,
        device: torch.device | str = "cpu",
    ):
        items = [dataset[i] for i in range(len(dataset))]
        self.tensors = tuple(
            torch.stack([torch.as_tensor(item[k]) for item in items]).to(device)
            for k in range(len(items[0]))
        )
        self.batch_size, self.device = batch_size, torch.device(device)
        self.sampler = sampler if sampler is not None else SequentialSampler(range(len(items)))
        # what Lightning reads of a DataLoader (its epoch goes to sampler.set_epoch)
        self.batch_sampler = None
        self._yielded = self._resume_at = 0

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        order = torch.as_tensor(list(self.sampler), dtype=torch.long, device=self.device)
        start, self._resume_at = self._resume_at, 0
        start = start if start < len(self) else 0  # a finished epoch: the next one, whole
        self._yielded = start
        for first in range(start * self.batch_size, len(order), self.batch_size):
            index = order[first : first + self.batch_size]
            self._yielded += 1
            yield tuple(t.index_select(0, index) for t in self.tensors)

    def state_dict(self) -> dict:
        """The batches of this epoch yielded so far."""
        return {"batches_yielded": self._yielded}

    def load_state_dict(self, state: dict) -> None:
        """The next epoch started (on resume) goes on after ``state``'s batches."""
        self._resume_at = int(state.get("batches_yielded", 0))
