"""Requests in words the model never trained on, side by side on one checkpoint, for each way of
reading them: the class accuracy on its training phrasings and on held-out class phrasings
(conf/heldout/<data>.yaml's ``prompt_templates``), and for a model whose captions name
attributes, each attribute's AUC and class accuracy asked with its training words ("a thick
{name}") and with the held-out ``attribute_words`` no training config has; then how its reading
read each held-out attribute phrasing (right word, none, another), with the nearest form and its
cosine where it missed: where MiniLM's similarity is the limit. Sampled with the evaluate CLI's
defaults, judged by its classifier.

    python bench/phrasings.py <ckpt_path> data=<the training data> [images=N] [--sealed] [--smoke]

``--sealed`` adds the held-out words of ``attribute_words_sealed``, a second list kept out of
sight while the reading was built, for a final measure.
"""

import sys

import numpy as np
from common import judged_checkpoint, record

from diffusion_lit.evaluation.attributes import pair_templates, words_followed
from diffusion_lit.evaluation.judge import predict, stack
from diffusion_lit.evaluation.phrasings import phrasing_sets, prompt_accuracy
from diffusion_lit.pipeline import TextToImage
from diffusion_lit.text.reading import RequestReader, _runs


def readings(pipe: TextToImage, options) -> dict:
    """The ways to read a request: name → (a pipeline, options)."""
    found = {"nearest training caption": (pipe, options.replace(nearest_prompt=True))}
    own = TextToImage(pipe.model, pipe.spec)
    own.reader = None  # its own text embedding
    found["own embedding"] = (own, options.replace(nearest_prompt=False))
    if pipe.reader is not None:
        found["in its words (the default)"] = (pipe, options.replace(nearest_prompt=False))
    return found


def misses(reader: RequestReader, asked: dict, name: str) -> tuple[list[str], list[str]]:
    """Per attribute word, how the reader read its held-out phrasings (for class ``name``),
    and each phrasing it did not read as its word, with the nearest form and cosine."""
    rows, missed = [], []
    forms = reader._vectors([f for _, _, f in reader.forms])
    for attribute, by_word in asked.items():
        for word, templates in by_word.items():
            prompts = [t.format(name=name) for t in templates]
            got = [r.words.get(attribute) for r in reader.read(prompts, [0] * len(prompts))]
            right = sum(g == word for g in got)
            none = sum(g is None for g in got)
            rows.append(f"| {attribute} | {word} | {right} | {none} | {len(got) - right - none} |")
            for prompt, g in zip(prompts, got, strict=True):
                if g != word:
                    runs = reader._vectors(_runs(reader._without_class(prompt)))
                    sims = (runs @ forms.T).max(dim=0).values
                    best = int(sims.argmax())
                    missed.append(f"{prompt!r} → {g or 'none'} (nearest form "
                                  f"{reader.forms[best][2]!r} of {reader.forms[best][1]!r}, "
                                  f"{sims[best]:.2f})")  # fmt: skip
    return rows, missed


def judge_on_real(datamodule, judge, attributes: list[str]) -> str:
    """The judge's accuracy on the real held-out images captioned with each attribute word: the
    ceiling of the class accuracies above. Where it is high and the drawn images' low, the model
    loses the class for the word; where it is low, the judge cannot read such images."""
    images, labels = stack(datamodule.val_set)
    right = (predict(judge, images) == labels).numpy()
    cells = []
    for attribute in attributes:
        words = np.asarray(datamodule.captions.words[attribute], dtype=object)
        words = words[datamodule.val_set.indices]
        for word in datamodule.attribute_words[attribute]:
            mine = words == word
            cells.append(f"{attribute} {word} {right[mine].mean():.1%} ({mine.sum()})")
    return "; ".join(cells)


def main() -> None:
    args = [a for a in sys.argv[1:] if a not in ("--smoke", "--sealed")]
    ckpt, n, cfg, options, pipe, datamodule, judge = judged_checkpoint(args, images=50)
    guidance = options.guidance(pipe.spec.guidance)  # the model's where cfg has null
    classes = datamodule.class_names
    labels = list(range(len(classes)))
    heldout = cfg.get("heldout") or {}
    sets = phrasing_sets(pipe, heldout, classes)
    if "heldout_phrasings" not in sets:
        raise SystemExit("This data has no held-out phrasings (conf/heldout/<data>.yaml).")
    asked = {a: {w: list(ts) for w, ts in ws.items()}
             for a, ws in (heldout.get("attribute_words") or {}).items()}  # fmt: skip
    key = "attribute_words_sealed"
    sealed = {a: {w: list(ts) for w, ts in ws.items()} for a, ws in heldout.get(key).items()
              } if "--sealed" in sys.argv and heldout.get(key) else {}  # fmt: skip
    trained_words = {}
    for attribute in datamodule.attributes:
        pair = pair_templates(attribute, datamodule.caption_templates)
        if pair is not None and attribute.name in asked:
            low, high = attribute.known_words[0], attribute.known_words[-1]
            trained_words[attribute.name] = {low: [pair[0]], high: [pair[1]]}

    header = ["| reading | training captions | held-out class phrasings |"]
    header += [f" {a}: training words (AUC, class) | {a}: held-out words (AUC, class) |"
               + (f" {a}: sealed held-out words (AUC, class) |" if a in sealed else "")
               for a in trained_words]  # fmt: skip
    columns = sum(2 + (a in sealed) for a in trained_words)
    rows = ["".join(header), "|---|---|---|" + "---|" * columns]
    for name, (reader_pipe, drawn) in readings(pipe, options).items():
        own, _ = prompt_accuracy(sets["training_phrasings"], labels, n, drawn, reader_pipe, judge)
        held, _ = prompt_accuracy(sets["heldout_phrasings"], labels, n, drawn, reader_pipe, judge)
        cells = [f"{own:.1%}", f"{held:.1%}"]
        for attribute, words in trained_words.items():
            extra = [sealed[attribute]] if attribute in sealed else []
            for phrasings in (words, asked[attribute], *extra):
                got = words_followed(reader_pipe, datamodule.attributes, {attribute: phrasings},
                                     classes, labels, judge, n, drawn)  # fmt: skip
                a = got["attributes_other_words"][attribute]
                cells.append(f"{a['auc']:.2f}, {a['accuracy']:.1%}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")

    notes = ""
    if trained_words:
        notes = ("\n\nThe judge on real held-out images of each caption word (images): "
                 + judge_on_real(datamodule, judge, list(trained_words)) + ".")  # fmt: skip
    if pipe.reader is not None and asked:
        read, missed = misses(pipe.reader, asked, classes[-1].replace("_", " "))
        notes += "\n\nHow the default reading read the held-out attribute phrasings (for "
        notes += f"'{classes[-1]}'):\n\n| attribute | word | read as it | none | another |\n"
        notes += "|---|---|---|---|---|\n" + "\n".join(read)
        notes += "\n\nMissed (MiniLM's nearest form of any word, and its cosine):\n\n"
        notes += "\n".join(f"- {m}" for m in missed)
    count = sum(len(ps) for ps in sets["heldout_phrasings"])
    record(
        f"Requests in words the model never trained on, by reading ({ckpt})",
        "\n".join(rows) + notes,
        f"`{n}` images per class and set (cycling through its phrasings); {count} held-out "
        f"class phrasings; attribute AUC of the high word's images over the low word's by the "
        f"caption's own measure, mean over classes, and the judge's class accuracy on them; "
        f"{options.sampler} {options.steps} steps, {guidance}, EMA weights.",
    )


if __name__ == "__main__":
    main()
