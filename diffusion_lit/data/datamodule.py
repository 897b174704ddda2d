"""One LightningDataModule for every image dataset: transforms, a seeded train/val split,
per-device batches, and the captions the model is conditioned on."""

import functools
import hashlib
import os
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler, Subset
from torchdata.stateful_dataloader import StatefulDataLoader
from torchvision import transforms as T

from diffusion_lit import checks
from diffusion_lit.data.measures import MEASURES, as_array, measure_all
from diffusion_lit.data.resident import ResidentLoader
from diffusion_lit.data.subset import ClassSubset
from diffusion_lit.errors import BadValue, UserError
from diffusion_lit.text.captions import (
    Attribute,
    CaptionTable,
    described,
    from_image_captions,
    merged,
)
from diffusion_lit.text.templates import check_templates, class_names_of, class_prompts


def _convert(image, mode: str):
    return image.convert(mode)  # a module-level function so worker processes can pickle it


def image_transform(image_size: int, channels: int, hflip: bool) -> T.Compose:
    """PIL image → tensor in [-1, 1] of shape (channels, image_size, image_size); ``channels``
    1 (grayscale) or 3 (RGB)."""
    steps = [
        T.Lambda(partial(_convert, mode="L" if channels == 1 else "RGB")),
        T.Resize(image_size, antialias=True),
        T.CenterCrop(image_size),
    ]
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize([0.5] * channels, [0.5] * channels)]
    return T.Compose(steps)


class ImageDataModule(L.LightningDataModule):
    """Builds ``dataset(transform=..., **dataset_kwargs)`` (a dataset with ``.classes`` and
    ``.targets``), so ``data.root`` or ``data.download`` in the config go straight to the
    dataset class.

    Each training image is captioned (:mod:`diffusion_lit.text.captions`): by the captions a
    dataset comes with (a ``captions`` attribute, a list per image), or by its class's prompts
    (``prompt_templates`` × the class's names) and, with ``attributes``, by captions that name
    what the image shows (``caption_templates`` with the words of each attribute, measured from
    the image once and cached in ``measure_cache``; ``heldout_combinations``, word → classes,
    lists the class × word captions training never sees; ``attribute_share``: how often a
    caption names each attribute its image has a word for). The loaders yield (image, label,
    the positions of its captions); training draws one of them at random every step.
    ``classes`` (names) keeps only those classes' images, numbered in that order; a model
    being extended puts its own classes and captions first (:meth:`extend`).

    ``batch_size`` is the global batch: each of the trainer's devices gets an equal share.
    The training order depends only on (seed, epoch), and the loaders are torchdata's
    ``StatefulDataLoader``, whose position inside an epoch Lightning saves in checkpoints: a
    resumed run sees the batches it would have seen. ``resident`` keeps the whole dataset,
    decoded once, on the training device instead (:mod:`.resident`): the same batches, with no
    loader to wait on.
    """

    def __init__(
        self,
        dataset: Callable[..., Dataset],
        image_size: int,
        channels: int,
        prompt_templates: list[str] | str,
        class_synonyms: dict | None = None,
        val_fraction: float = 0.1,
        batch_size: int = 128,
        num_workers: int = 2,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        hflip: bool = False,
        split_seed: int = 0,
        attributes: dict | None = None,
        attribute_synonyms: dict | None = None,
        caption_templates: list[str] | None = None,
        heldout_combinations: dict | None = None,
        attribute_share: float = 0.5,
        measure_cache: str | None = None,
        classes: list[str] | None = None,
        resident: bool = False,
        **dataset_kwargs,
    ):
        super().__init__()
        checks.integer("image_size", image_size, 4, 4096)
        if checks.integer("channels", channels, 1, 3) == 2:
            raise BadValue("channels", channels, "1 (grayscale) or 3 (RGB)")
        checks.integer("batch_size", batch_size, 1, 1_000_000)
        checks.integer("num_workers", num_workers, 0, 256)
        if not (checks.finite(val_fraction) and 0 < val_fraction < 1):
            raise BadValue("val_fraction", val_fraction, "a finite number > 0 and < 1")
        checks.integer("split_seed", split_seed, 0, checks.MAX_SEED)
        for key, value in [("pin_memory", pin_memory), ("persistent_workers", persistent_workers),
                           ("hflip", hflip), ("resident", resident)]:  # fmt: skip
            checks.flag(key, value)
        if resident and hflip:
            raise UserError(
                "data.resident=true reads each image once, so it cannot flip them at random: "
                "set data.hflip=false, or data.resident=false."
            )
        # one template given as a string is a one-item list, not a list of its characters
        self.prompt_templates = checks.texts("prompt_templates", prompt_templates)
        check_templates(self.prompt_templates)
        self.class_synonyms = checks.names_by_name("class_synonyms", class_synonyms)
        self.attributes = [Attribute.from_config(k, v) for k, v in (attributes or {}).items()]
        unknown = [a.measure for a in self.attributes if a.measure not in MEASURES]
        if unknown:
            raise BadValue("attributes", unknown, f"measures among {', '.join(MEASURES)}")
        synonyms = checks.names_by_name("attribute_synonyms", attribute_synonyms)
        words = {w for a in self.attributes for w in a.known_words}
        if words and not set(synonyms) <= words:  # without attributes (null), they are unused
            raise BadValue("attribute_synonyms", sorted(set(synonyms) - words),
                           f"attribute words ({', '.join(sorted(words))})")  # fmt: skip
        self.attribute_synonyms = {w: v for w, v in synonyms.items() if w in words}
        self.caption_templates = checks.texts("caption_templates", caption_templates, True) or []
        self.heldout = checks.names_by_name("heldout_combinations", heldout_combinations)
        if not (checks.finite(attribute_share) and 0 < attribute_share < 1):
            raise BadValue("attribute_share", attribute_share, "a finite number > 0 and < 1")
        self.attribute_share = attribute_share
        self.measure_cache = checks.path("measure_cache", measure_cache, optional=True)
        self.classes = checks.texts("classes", classes, optional=True)
        # the dataset's own arguments, checked here, where the config names them data.*
        if "root" in dataset_kwargs:
            checks.path("root", dataset_kwargs["root"])
        if "download" in dataset_kwargs:
            checks.flag("download", dataset_kwargs["download"])
        self.source = partial(dataset, **dataset_kwargs)
        self.image_size, self.channels, self.hflip = image_size, channels, hflip
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        self.resident = resident
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.known: tuple[list[str], CaptionTable] | None = None

    def dataset(self, transform: Callable | None = None) -> Dataset:
        """The dataset (only ``classes``' images, when given)."""
        found = self.source(transform=transform)
        return ClassSubset(found, self.classes) if self.classes is not None else found

    @functools.cached_property
    def data_class_names(self) -> list[str]:
        """The classes of the data's images (after ``classes``)."""
        return list(self.dataset(transform=None).classes)

    @property
    def class_names(self) -> list[str]:
        """The model's classes: the data's, after those of a model being extended."""
        return self._extended[0] if self.known else self.data_class_names

    @property
    def class_prompts(self) -> list[list[str]]:
        """Every class's captions, the first its default prompt (the model's prompt bank)."""
        return self.captions.class_prompts

    @property
    def attribute_words(self) -> dict[str, list[str]]:
        """The words of each attribute the captions use."""
        return self.captions.attributes

    @property
    def synonyms(self) -> dict[str, list[str]]:
        """Other words for the model's class names and attribute words (``class_synonyms``,
        ``attribute_synonyms``), which a request is read with
        (:mod:`diffusion_lit.text.reading`)."""
        classes = {k: v for k, v in self.class_synonyms.items() if k in self.class_names}
        return classes | dict(self.attribute_synonyms)

    def extend(self, class_names: list[str], class_prompts: list[list[str]],
               attributes: dict[str, list[str]]) -> None:  # fmt: skip
        """Makes the captions those of a trained model (its ``class_names``, ``class_prompts``
        and attribute words) followed by the data's: the model's classes keep their numbers
        and captions, and the data's images are labelled and captioned in that table."""
        self.known = (list(class_names), CaptionTable(class_prompts, attributes=attributes))
        self.__dict__.pop("_extended", None)

    @property
    def captions(self) -> CaptionTable:
        """The caption table: each class's captions and each image's caption positions."""
        return self._extended[1] if self.known else self.data_captions

    @property
    def labels_in_table(self) -> np.ndarray:
        """Each of the data's classes' number among :attr:`class_names`."""
        return self._extended[2].classes if self.known else np.arange(len(self.data_class_names))

    @functools.cached_property
    def _extended(self) -> tuple[list[str], CaptionTable, object]:
        own = self.data_captions
        names, table, (_, remap) = merged([self.known, (self.data_class_names, own)])
        labels = [int(t) for t in self.dataset(transform=None).targets]
        rows = remap.rows(labels, own.rows)
        return names, CaptionTable(table.class_prompts, rows, table.attributes, own.words), remap

    @functools.cached_property
    def data_captions(self) -> CaptionTable:
        """The data's own caption table: each class's captions and each image's (computed
        once)."""
        base = self.dataset(transform=None)
        labels = [int(t) for t in base.targets]
        names = self.data_class_names
        if getattr(base, "captions", None) is not None:
            return from_image_captions(names, base.captions, labels)
        # the vocabulary is the whole data's (checked so), of which ``classes`` use their part
        every = base.dataset.classes if isinstance(base, ClassSubset) else names
        class_names_of(every, self.class_synonyms)
        synonyms = {k: v for k, v in (self.class_synonyms or {}).items() if k in names}
        if not self.attributes:
            return CaptionTable(class_prompts(names, self.prompt_templates, synonyms))
        described(every, self.prompt_templates, None, self.attributes, self.caption_templates,
                  self.heldout)  # fmt: skip
        heldout = {w: [c for c in cs if c in names] for w, cs in (self.heldout or {}).items()}
        measures = measure_all(
            (as_array(base[i][0]) for i in range(len(base))),  # (a folder's wraps around)
            sorted({a.measure for a in self.attributes}),
            self.measure_cache,
            key=fingerprint(base),
        )
        words = {a.name: a.words_of(measures[a.measure], labels) for a in self.attributes}
        return described(
            names, self.prompt_templates, synonyms, self.attributes, self.caption_templates,
            heldout, words, labels, self.attribute_share,
        )  # fmt: skip

    def prepare_data(self) -> None:
        self.dataset(transform=None)  # downloads where the dataset can; fails early otherwise

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_full = self.dataset(
            transform=image_transform(self.image_size, self.channels, self.hflip)
        )
        val_full = self.dataset(transform=image_transform(self.image_size, self.channels, False))
        n = len(train_full)
        n_val = max(1, round(n * self.val_fraction))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        self.train_set = Subset(train_full, order[n_val:])
        self.val_set = Subset(val_full, order[:n_val])

    def _per_device_batch(self) -> int:
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.batch_size % world:
            raise UserError(
                f"data.batch_size={self.batch_size} is not divisible by the {world} devices; "
                f"use a multiple of {world}."
            )
        return self.batch_size // world

    def _loader(
        self, subset: Subset, sampler: Sampler | None = None
    ) -> StatefulDataLoader | ResidentLoader:
        dataset = Captioned(subset, self.captions, self.labels_in_table)
        if self.resident:
            device = self.trainer.strategy.root_device if self.trainer is not None else "cpu"
            return ResidentLoader(dataset, self._per_device_batch(), sampler, device)
        with warnings.catch_warnings():  # torchdata calls an API torch deprecated, not the user
            warnings.filterwarnings("ignore", message="'set_vital' is deprecated")
            return StatefulDataLoader(
                dataset,
                batch_size=self._per_device_batch(),
                sampler=sampler,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
                persistent_workers=self.persistent_workers and self.num_workers > 0,
                drop_last=False,
            )

    def train_dataloader(self) -> StatefulDataLoader:
        # A shuffle that depends only on (seed, epoch), so a resumed run sees the batches an
        # uninterrupted one would: Lightning restores no loader state at an epoch boundary, and
        # prefetches the first batch before it calls set_epoch, so the epoch is set here too
        # (the same count Lightning passes). The sampler also splits the data across devices.
        trainer = self.trainer
        sampler = DistributedSampler(
            self.train_set,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            shuffle=True,
            seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),  # set by L.seed_everything
        )
        # not trainer.current_epoch (the completed count, one behind after a mid-epoch resume):
        # the public API has no "epoch being trained", so this is the value fit_loop passes
        sampler.set_epoch(trainer.fit_loop.epoch_progress.current.processed if trainer else 0)
        return self._loader(self.train_set, sampler)

    def val_dataloader(self) -> StatefulDataLoader:
        return self._loader(self.val_set)


class Captioned(Dataset):
    """A subset's (image, label) with the positions of the image's captions in its class's row
    of ``captions`` (every position of it, for a table without captions per image), the label
    its class's number in the table (``labels``: the dataset's class → the table's)."""

    def __init__(self, subset: Subset, captions: CaptionTable, labels: np.ndarray):
        self.subset, self.labels = subset, labels
        self.every = np.arange(len(captions.class_prompts[0]))
        self.rows = captions.rows

    def __len__(self) -> int:
        return len(self.subset)

    def __getitem__(self, i: int):
        image, label = self.subset[i]
        row = self.every if self.rows is None else self.rows[self.subset.indices[i]]
        return image, int(self.labels[label]), torch.as_tensor(row, dtype=torch.long)


def fingerprint(dataset) -> str:
    """What identifies a dataset's images, for the measure cache: its files' names, sizes and
    times, or its pixels."""
    digest = hashlib.sha256(f"{type(dataset).__name__}|{len(dataset)}".encode())
    files = getattr(dataset, "files", None)
    if files is not None:
        for path in map(Path, files):
            stat = path.stat()
            digest.update(f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    else:
        pixels = getattr(dataset, "images", None)
        pixels = pixels if pixels is not None else getattr(dataset, "data", None)
        if pixels is None:
            pixels = [np.asarray(dataset[i][0]) for i in range(len(dataset))]
        digest.update(np.ascontiguousarray(np.asarray(pixels)).tobytes())
    return digest.hexdigest()
