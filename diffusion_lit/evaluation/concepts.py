"""Does a model of many named concepts draw the one it is asked for? For data whose images
carry an emoji name, a skin tone and an artist (``data=emoji``: ~1,900 emoji in two styles), the
drawn images are judged in the features of the evaluate CLI's own judge, against every real
image:

- **subcategory accuracy**: the judge names the requested concept's class;
- **concept retrieval R@1 / R@5**: the distinct concepts ranked by their nearest real
  training image to the drawn one; the requested concept first, or among the first five
  (chance: k ÷ the number of concepts);
- **skin tone and style**: linear probes on the judge's features (scikit-learn's logistic
  regression, fitted on the real training images), the tone probe's accuracy and the AUC of its
  expected tone (light 0 … dark 4) for "dark" requests over "light" ones, the style probe's
  accuracy;
- **FID** of the drawn images against the real images of the same concepts;
- **copies**: the share of drawn images closer, in pixels, to a training image than that image
  is to its nearest other real image (Somepalli et al. 2023 ask the same question in learned
  features): a model that returns its training images scores 1, one that draws new images 0.

One :class:`ConceptJudge` scores any set of images with what was asked for them, so every
figure stands beside the same figure for images known to be good or bad: real images the judge
did not train on and, where given, another artist's real emoji (the ceiling), pure noise and
real images under a shuffled request (the floor), and training images returned with a little
noise (which the copies measure must catch)."""

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from diffusion_lit import files
from diffusion_lit.data.datamodule import image_transform
from diffusion_lit.data.emoji import STYLES, TONES
from diffusion_lit.diffusion.options import SamplingOptions
from diffusion_lit.edit_images import open_image
from diffusion_lit.errors import UserError
from diffusion_lit.evaluation.attributes import auc
from diffusion_lit.evaluation.judge import ImageClassifier, predict, stack
from diffusion_lit.evaluation.metrics import distribution_distance, quality_features
from diffusion_lit.images import on_white
from diffusion_lit.pipeline import TextToImage

TONE_ORDER = list(TONES.values())  # light … dark
KS = (1, 5)


@dataclass
class RealImages:
    """Every real image of the data (no augmentation) in [−1, 1], with its emoji name, skin tone
    (or None), style (package), code ("1f44d-1f3fb"), class, and whether the model trained on
    it."""

    images: torch.Tensor
    concepts: list[str]
    tones: list[str | None]
    styles: list[str]
    codes: list[str]
    labels: torch.Tensor
    train: torch.Tensor

    @classmethod
    def of(cls, datamodule) -> "RealImages":
        base = datamodule.val_set.dataset  # the whole data, through the val transform
        images, labels = stack(base)
        train = torch.zeros(len(base), dtype=torch.bool)
        train[datamodule.train_set.indices] = True
        return cls(images, list(base.concepts), list(base.tones), list(base.styles),
                   list(base.codes), labels, train)  # fmt: skip

    def where(self, keep) -> list[int]:
        return [i for i in range(len(self.concepts)) if keep(i)]


def has_concepts(datamodule) -> bool:
    """Whether the data's images carry emoji names, tones and styles (``data=emoji``)."""
    return all(
        getattr(datamodule.val_set.dataset, a, None) is not None
        for a in ("concepts", "tones", "styles", "codes")
    )


def _probe():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))


class ConceptJudge:
    """The judge's view of the real training images: their features by concept, the tone and
    style probes, and each image's distance to its nearest other real image (for copies).
    :meth:`score` judges any images with the concepts (and tones, styles) asked for them."""

    def __init__(self, judge: ImageClassifier, real: RealImages):
        self.judge = judge
        features = quality_features(judge, real.images).numpy()
        train = real.train.numpy()
        self.names = sorted({c for c, t in zip(real.concepts, train, strict=True) if t})
        self.number = number = {c: i for i, c in enumerate(self.names)}
        self.bank = torch.from_numpy(features[train])
        self.bank_concepts = torch.tensor([number[c] for c in np.array(real.concepts)[train]])
        self.subcategory = {c: int(y) for c, y in zip(real.concepts, real.labels, strict=True)}
        toned = train & np.array([t is not None for t in real.tones])
        self.tone = _probe().fit(features[toned], np.array(real.tones, dtype=object)[toned])
        self.style = _probe().fit(features[train], np.array(real.styles)[train])
        self.pixels = real.images[real.train].flatten(1)
        self.radii = _nearest_other(self.pixels, real.images.flatten(1), real.train)

    def knows(self, concept: str) -> bool:
        """Whether the model trained on an image of ``concept``."""
        return concept in self.number

    @torch.no_grad()
    def score(
        self,
        images: torch.Tensor,
        concepts: list[str],
        tones: list[str | None] | None = None,
        styles: list[str | None] | None = None,
        per_concept: bool = False,
    ) -> dict:
        """``images`` (in [−1, 1]) judged against what was asked of each: its concept, and
        where given its tone and style (None: not asked). Returns each measure that applies,
        with the number of images behind it (and each concept's R@5)."""
        features = quality_features(self.judge, images)
        ranks = self._ranks(features, concepts)
        wanted = torch.tensor([self.subcategory[c] for c in concepts])
        result = {
            "images": len(images),
            "subcategory_accuracy": (predict(self.judge, images) == wanted).float().mean().item(),
            **{f"r{k}": float((ranks < k).mean()) for k in KS},
            "copies": self.copies(images),
        }
        if per_concept:
            asked = np.array(concepts)
            result["per_concept_r5"] = {c: float((ranks[asked == c] < 5).mean())
                                        for c in dict.fromkeys(concepts)}  # fmt: skip
        f = features.numpy()
        if tones is not None and any(tones):
            asked = [i for i, t in enumerate(tones) if t]
            said = self.tone.predict(f[asked])
            result["tone_accuracy"] = float(np.mean(said == np.array([tones[i] for i in asked])))
            level = self.tone.predict_proba(f) @ np.array(
                [TONE_ORDER.index(c) for c in self.tone.classes_], dtype=float
            )
            dark = [level[i] for i in asked if tones[i] == "dark"]
            light = [level[i] for i in asked if tones[i] == "light"]
            if dark and light:
                result["tone_auc"] = auc(dark, light)
        if styles is not None and any(styles):
            asked = [i for i, s in enumerate(styles) if s]
            said = self.style.predict(f[asked])
            result["style_accuracy"] = float(np.mean(said == np.array([styles[i] for i in asked])))
        return result

    def _ranks(self, features: torch.Tensor, concepts: list[str]) -> np.ndarray:
        """Each image's requested concept's place (0: first) among the distinct concepts ranked
        by their nearest training image."""
        ranks = []
        for chunk, asked in zip(features.split(256), _chunks(concepts, 256), strict=True):
            distances = torch.cdist(chunk, self.bank)  # (chunk, bank)
            nearest = torch.full((len(chunk), len(self.names)), float("inf"))
            index = self.bank_concepts.expand(len(chunk), -1)
            nearest.scatter_reduce_(1, index, distances, "amin")
            own = nearest[torch.arange(len(chunk)), [self.number[c] for c in asked]]
            ranks.append((nearest < own[:, None]).sum(1))
        return torch.cat(ranks).numpy()

    def copies(self, images: torch.Tensor) -> float:
        """The share of ``images`` closer to a training image than it is to its nearest other
        real image. (A real image that is that nearest neighbour ties with it: the margin keeps
        cdist's rounding, 1e-5 of a distance, from calling such a tie a copy.)"""
        caught = []
        for chunk in images.flatten(1).split(256):
            distances, nearest = torch.cdist(chunk, self.pixels).min(1)
            caught.append(distances < self.radii[nearest] * (1 - 1e-3))
        return torch.cat(caught).float().mean().item()


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _nearest_other(train: torch.Tensor, every: torch.Tensor, is_train: torch.Tensor):
    """Each training image's distance to its nearest other real image (flattened pixels)."""
    positions = is_train.nonzero().squeeze(1)
    radii = []
    for start in range(0, len(train), 256):
        distances = torch.cdist(train[start : start + 256], every)
        rows = torch.arange(len(distances))
        distances[rows, positions[start : start + 256]] = float("inf")  # itself
        radii.append(distances.min(1).values)
    return torch.cat(radii)


def _plain(code: str) -> str:
    """A code without its variation selectors: artists differ on writing them."""
    return code.lower().replace("-fe0f", "")


def unseen_style(folder: Path, real: RealImages, size: int, channels: int):
    """Another artist's emoji of the same codes (``<folder>/<code>.png``, e.g. OpenMoji
    rendered by ``bench/emoji_eval.py``): the images in [−1, 1] with their concepts and tones,
    for the codes the data has."""
    by_code = {_plain(c): i for i, c in enumerate(real.codes)}
    transform = image_transform(size, channels, hflip=False)  # as the real images are read
    images, concepts, tones = [], [], []
    for path in sorted(Path(folder).glob("*.png")):
        i = by_code.get(_plain(path.stem))
        if i is None or not files.is_file(path, Path(folder)):
            continue
        images.append(transform(on_white(open_image(path, Path(folder)))))  # bounded reading
        concepts.append(real.concepts[i])
        tones.append(real.tones[i])
    if not images:
        raise UserError(
            f"concept_calibration={str(folder)!r} holds no <code>.png of an emoji the data has "
            "(e.g. 1f337.png): render one with python bench/emoji_eval.py, or leave it null."
        )
    return torch.stack(images), concepts, tones


def concept_following(
    pipe: TextToImage,
    judge: ImageClassifier,
    datamodule,
    count: int,
    n: int,
    phrasings: list[str],
    calibration: Path | None,
    options: SamplingOptions,
    seed: int = 0,
) -> dict:
    """The concept evaluation: ``count`` of the data's concepts (drawn at random with
    ``seed``), ``n`` images each asked for by name and in ``phrasings`` (templates of
    ``{name}`` no caption uses, cycled through); light and dark, and each style, for some of
    them and for every held-out pair of the data (``calibration``: a folder of another artist's
    emoji, see :func:`unseen_style`); the calibration sets scored beside them."""
    real = RealImages.of(datamodule)
    scorer = ConceptJudge(judge, real)
    rng = random.Random(seed)
    heldout = set(getattr(datamodule.val_set.dataset, "heldout", None) or ())
    asked = rng.sample(scorer.names, min(count, len(scorer.names)))

    def draw(prompts: list[str], each: int) -> torch.Tensor:
        images = pipe(prompts, each, options=options, progress=False).images
        return images.flatten(0, 1) * 2 - 1

    named = draw(asked, n)
    concepts = [c for c in asked for _ in range(n)]
    result = {"drawn": scorer.score(named, concepts, per_concept=True)}
    if phrasings:
        prompts = [phrasings[j % len(phrasings)].format(name=c) for c in asked for j in range(n)]
        result["rephrased"] = scorer.score(draw(prompts, 1), concepts)

    # tones and styles: a tenth (a quarter) of the concepts with training images of both ends,
    # each end asked for; and each held-out pair's concept, asked with both ends and its word
    for kind, words, share in [("tone", ("light", "dark"), 10), ("style", tuple(STYLES), 4)]:
        vocabulary = TONE_ORDER if kind == "tone" else list(STYLES)
        both = _with_both(real, f"{kind}s", words, heldout)
        held = {(c, w) for c, w in heldout if w in vocabulary and scorer.knows(c)}
        for key, chosen, extra in [
            (kind, rng.sample(both, min(len(both), max(2, count // share))), set()),
            (f"{kind}_heldout", sorted({c for c, _ in held}), held),
        ]:
            requests = sorted({(c, w) for c in chosen for w in words} | extra)
            if requests:
                result[key] = _asked_with_words(scorer, draw, n, kind, requests, extra)

    asked_once = set(asked)
    same = [i for i, c in enumerate(real.concepts) if c in asked_once]
    by_style = {s: real.images[[i for i in same if real.styles[i] == s]] for s in STYLES}
    result["drawn"]["fid"] = distribution_distance(judge, real.images[same], named)["fid"]
    result["fid_real_vs_real"] = distribution_distance(judge, *by_style.values())["fid"]
    result["calibration"] = calibrate(scorer, real, judge, same, calibration, datamodule, seed)
    return {"concepts": result | {
        "asked": len(asked), "images_per_concept": n, "distinct_concepts": len(scorer.names),
        "phrasings": list(phrasings),
    }}  # fmt: skip


def _asked_with_words(scorer, draw, n: int, kind: str, requests, held: set) -> dict:
    """``n`` images for each (concept, tone or style) request, scored on the word's accuracy
    (over the ``held`` pairs only, where given: those no caption says) and, for tones, the
    light-vs-dark AUC over every request."""
    if kind == "tone":
        prompts = [f"{c}: {w} skin tone" for c, w in requests]
    else:
        prompts = [f"{c}, {STYLES[w]}" for c, w in requests]
    images = draw(prompts, n)
    concepts = [c for c, _ in requests for _ in range(n)]
    words = [w if not held or (c, w) in held else None for c, w in requests for _ in range(n)]
    found = scorer.score(images, concepts, **{f"{kind}s": words})
    if kind == "tone" and held:
        every = [w for _, w in requests for _ in range(n)]
        found["tone_auc"] = scorer.score(images, concepts, tones=every).get("tone_auc")
    return found | {"requests": len(requests)}


def _with_both(real: RealImages, field: str, words: tuple[str, ...], heldout: set) -> list[str]:
    """The concepts with training images of each of ``words`` (tones or styles), no pair of
    them held out."""
    values = getattr(real, field)
    seen: dict[str, set] = {}
    for c, v, t in zip(real.concepts, values, real.train.tolist(), strict=True):
        if t and v in words:
            seen.setdefault(c, set()).add(v)
    return sorted(c for c, vs in seen.items()
                  if vs == set(words) and not any((c, w) in heldout for w in words))  # fmt: skip


def calibrate(scorer, real, judge, same, folder, datamodule, seed) -> dict:
    """The same measures on images known to be good or bad: the real images the model and the
    judge did not train on, noise, those real images under a shuffled request, training images
    returned with a little noise, and (``folder``) another artist's emoji."""
    g = torch.Generator().manual_seed(seed)
    held = [i for i in real.where(lambda i: not real.train[i]) if scorer.knows(real.concepts[i])]
    images = real.images[held]
    concepts = [real.concepts[i] for i in held]
    tones, styles = [real.tones[i] for i in held], [real.styles[i] for i in held]
    shuffled = [concepts[i] for i in torch.randperm(len(held), generator=g).tolist()]
    train = real.where(lambda i: bool(real.train[i]))
    picked = [train[i] for i in torch.randperm(len(train), generator=g)[: len(held)].tolist()]
    copies = real.images[picked] + 0.05 * torch.randn(len(picked), *real.images.shape[1:],
                                                      generator=g)  # fmt: skip
    noise = torch.rand(len(held), *real.images.shape[1:], generator=g) * 2 - 1
    result = {
        "heldout_real": scorer.score(images, concepts, tones, styles),
        "noise": scorer.score(noise, concepts, tones, styles)
        | {"fid": distribution_distance(judge, real.images[same], noise[: len(same)])["fid"]},
        "shuffled": scorer.score(images, shuffled),
        "training_copies": scorer.score(copies.clamp(-1, 1), [real.concepts[i] for i in picked]),
    }
    if folder is not None:
        other, names, other_tones = unseen_style(
            folder, real, datamodule.image_size, datamodule.channels
        )
        mine = [i for i, c in enumerate(names) if scorer.knows(c)]
        result["unseen_style"] = scorer.score(
            other[mine], [names[i] for i in mine], [other_tones[i] for i in mine]
        ) | {"fid": distribution_distance(judge, real.images[same], other[mine])["fid"]}
    return result
