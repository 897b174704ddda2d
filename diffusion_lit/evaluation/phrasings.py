"""Does the model draw a request it was not taught word for word? The judge's accuracy over
the model's own training prompts and over held-out phrasings (``conf/heldout/<data>.yaml``),
each class's prompts cycled through."""

import torch

from diffusion_lit.diffusion.options import SamplingOptions
from diffusion_lit.evaluation.judge import ImageClassifier, predict
from diffusion_lit.pipeline import TextToImage
from diffusion_lit.text.templates import class_prompts


def heldout_phrasings(heldout, classes: list[str]) -> list[list[str]] | None:
    """The phrasings of a data's held-out config node (``prompt_templates``, ``class_synonyms``)
    for each of ``classes``; None without one."""
    if not heldout or not heldout.get("prompt_templates"):
        return None
    synonyms = {k: v for k, v in (heldout.get("class_synonyms") or {}).items() if k in classes}
    return class_prompts(classes, list(heldout.prompt_templates), synonyms, where="heldout")


def phrasing_sets(pipe: TextToImage, heldout, classes: list[str]) -> dict:
    """``training_phrasings`` (the model's prompts) and, where the data has a held-out config,
    ``heldout_phrasings``: each a list of prompts for each of ``classes``."""
    bank = pipe.model.prompts
    own = [bank.class_prompts[bank.class_names.index(c)] for c in classes]
    found = heldout_phrasings(heldout, classes)
    return {"training_phrasings": own} | ({} if found is None else {"heldout_phrasings": found})


def phrasing_accuracy(
    pipe: TextToImage,
    judge: ImageClassifier,
    heldout,
    classes: list[str],
    labels: list[int],
    n: int,
    options: SamplingOptions,
) -> dict:
    """For each phrasing set, the accuracy of ``n`` images per class of ``classes`` (whose
    numbers for the judge are ``labels``) sampled with ``options``, and every prompt's
    (``<set>_accuracy``, ``<set>_per_prompt``); nothing for ``n`` = 0."""
    result = {}
    for name, per_class in (phrasing_sets(pipe, heldout, classes) if n else {}).items():
        accuracy, per_prompt = prompt_accuracy(per_class, labels, n, options, pipe, judge)
        result |= {f"{name}_accuracy": accuracy, f"{name}_per_prompt": per_prompt}
    return result


def prompt_accuracy(
    per_class: list[list[str]],
    classes: list[int],
    n: int,
    options: SamplingOptions,
    pipe: TextToImage,
    judge,
) -> tuple[float, dict[str, float]]:
    """The judge's accuracy on ``n`` images per class (``classes``: their numbers for the judge)
    cycling through each class's prompts, in all and by prompt."""
    prompts = [ps[j % len(ps)] for ps in per_class for j in range(n)]
    labels = torch.tensor(classes).repeat_interleave(n)
    images = pipe(prompts, options=options, progress=False).images.flatten(0, 1)
    correct = (predict(judge, images * 2 - 1) == labels).float()
    by_prompt = {p: [] for p in prompts}
    for p, c in zip(prompts, correct.tolist(), strict=True):
        by_prompt[p].append(c)
    return correct.mean().item(), {p: sum(c) / len(c) for p, c in by_prompt.items()}
