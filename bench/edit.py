"""Editing real pictures with a prompt, on one checkpoint at the sample CLI's defaults.

Image-to-image (SDEdit): for each binned attribute the captions name (thickness, slant; the
brightness of a garment), the real held-out images in the lowest third of their class are
edited with the caption asking for the high word ("a thick seven") and those in the highest
third with the low word ("a thin seven"), at strengths from 0.3 to 0.9 (1: drawn from noise).
Per strength and direction: the AUC of the outputs' measure over the inputs' (the high word's
way round: 0.5 unchanged, 1 always moved the asked way), the share of pairs moved the asked
way, the judge's accuracy on the input's class (kept), and how far the output moved: the RMS
pixel difference (pixels in [0, 1]) and the distance in the judge's penultimate features,
÷ the mean distance between two real images of the same class.

Inpainting (RePaint): the right half of each held-out image masked and redrawn, with its own
class's prompt and with the next class's: the judge's accuracy on the class asked for (and on
the input's class), with and without resampling; the pixels outside the mask are compared with
the input's.

    python bench/edit.py <ckpt_path> data=<the training data> [images=N]
                         [--picture docs/results/edit.png] [--smoke]

``--picture`` draws the figure: for four held-out images, the picture and its edits at each
strength (rows: thin → "a thick …", thick → "a thin …"), and the right half inpainted with
its own class's prompt and with the next class's.
"""

import sys
from pathlib import Path

import numpy as np
import torch
from common import OUT, SMOKE, judged_checkpoint, record
from torch.nn.functional import interpolate

from diffusion_lit.evaluation.attributes import auc, measured, pair_templates
from diffusion_lit.evaluation.judge import predict
from diffusion_lit.evaluation.metrics import penultimate_features, real_sets
from diffusion_lit.images import save_grid

STRENGTHS = [0.3, 0.9] if SMOKE else [0.3, 0.45, 0.6, 0.75, 0.9, 1.0]


def thirds(values: np.ndarray, labels: np.ndarray, classes: int, n: int):
    """Per class, the indices of its lowest and its highest third (at most ``n`` each)."""
    low, high = [], []
    for c in range(classes):
        mine = np.flatnonzero(labels == c)
        order = mine[np.argsort(values[mine], kind="stable")]
        k = min(n, max(1, len(order) // 3))
        low.append(order[:k])
        high.append(order[-k:])
    return low, high


def right_half(size: int) -> torch.Tensor:
    """The inpainting mask of the bench: the right half of a ``size`` × ``size`` picture."""
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 2 :] = 1
    return mask


def same_class_distance(features: torch.Tensor, labels: torch.Tensor) -> float:
    """The mean distance between two real images of the same class, in ``features``."""
    found = []
    for c in labels.unique():
        f = features[labels == c]
        if len(f) > 1:
            d = torch.cdist(f, f)
            found.append(d.sum() / (len(f) * (len(f) - 1)))
    return float(torch.stack(found).mean())


def edited(pipe, inputs, labels, prompts, options):
    """Each input edited with its prompt (prompts by class), (N, C, H, W) in [0, 1]."""
    out = torch.empty_like(inputs)
    for c in labels.unique().tolist():
        mine = (labels == c).nonzero().flatten()
        images = pipe([prompts[c]], init_images=inputs[mine], options=options, progress=False)
        out[mine] = images.images[0]
    return out


def edit_rows(pipe, judge, attribute, templates, real, classes, n, options, scale):
    images01, labels = (real[0] + 1) / 2, real[1]
    values = np.asarray(measured(images01, attribute.measure))
    low, high = thirds(values, labels.numpy(), len(classes), n)
    names = [c.replace("_", " ") for c in classes]
    low_prompt, high_prompt = ([t.format(name=name) for name in names] for t in templates)
    rows = []
    for strength in STRENGTHS:
        cells = []
        for way, picked, prompts in (("up", low, high_prompt), ("down", high, low_prompt)):
            index = torch.from_numpy(np.concatenate(picked))
            inputs, asked = images01[index], labels[index]
            out = edited(pipe, inputs, asked, prompts, options.replace(strength=strength))
            before, after = values[index.numpy()], np.asarray(measured(out, attribute.measure))
            up = way == "up"
            area = auc(after, before) if up else auc(before, after)
            moved = float(np.mean(after > before if up else after < before))
            kept = float((predict(judge, out * 2 - 1) == asked).float().mean())
            rms = float(((out - inputs) ** 2).mean(dim=(1, 2, 3)).sqrt().mean())
            f_in, f_out = (penultimate_features(judge, x * 2 - 1) for x in (inputs, out))
            distance = float((f_out - f_in).norm(dim=1).mean()) / scale
            cells.append(f"{area:.2f} | {moved:.0%} | {kept:.1%} | {rms:.3f} | {distance:.2f}")
            print(f"{attribute.name} {strength} {way}: {cells[-1]}", flush=True)
        rows.append(f"| {strength:g} | " + " | ".join(cells) + " |")
    low_n, high_n = (sum(map(len, picked)) for picked in (low, high))
    header = (
        f"| strength | {templates[1].format(name='…')} from the lowest third ({low_n} images): "
        "AUC | moved | class kept | RMS | feature distance | "
        f"{templates[0].format(name='…')} from the highest third ({high_n}): AUC | moved | "
        "class kept | RMS | feature distance |"
    )
    return [header, "|---" * 11 + "|", *rows]


def inpaint_rows(pipe, judge, real, classes, n, options):
    images01, labels = (real[0] + 1) / 2, real[1]
    per_class = [np.flatnonzero(labels.numpy() == c)[:n] for c in range(len(classes))]
    index = torch.from_numpy(np.concatenate(per_class))
    inputs, own = images01[index], labels[index]
    size = inputs.shape[-1]
    mask = right_half(size)
    prompts = [pipe.training_prompts[name][0] for name in classes]  # "Draw a seven"
    rows = []
    for jumps in (0, 2):
        other = (own + 1) % len(classes)
        for asked_name, asked in (("its own class", own), ("the next class", other)):
            out = torch.empty_like(inputs)
            for c in asked.unique().tolist():
                mine = (asked == c).nonzero().flatten()
                out[mine] = pipe([prompts[c]], init_images=inputs[mine], mask=mask,
                                 options=options.replace(resample_jumps=jumps),
                                 progress=False).images[0]  # fmt: skip
            said = predict(judge, out * 2 - 1)
            outside = bool(torch.equal(out[..., : size // 2], inputs[..., : size // 2]))
            rows.append(
                f"| {jumps} | {asked_name} | {float((said == asked).float().mean()):.1%} "
                f"| {float((said == own).float().mean()):.1%} | {'identical' if outside else 'NOT'}"
                " |"
            )
            print(rows[-1], flush=True)
    header = [f"| resample jumps | prompt ({len(index)} images) | judge names the class asked "
              "| judge names the input's class | left half (kept) |",
              "|---|---|---|---|---|"]  # fmt: skip
    return header + rows


def picture(pipe, attribute, templates, real, classes, options, path) -> None:
    """The figure of the module docstring, four images a row, 4× larger."""
    images01, labels = (real[0] + 1) / 2, real[1]
    values = np.asarray(measured(images01, attribute.measure))
    low, high = thirds(values, labels.numpy(), len(classes), 1)
    show = [1, 4, 7, 9] if len(classes) == 10 else list(range(min(4, len(classes))))
    rows = []
    for picked, template in ((low, templates[1]), (high, templates[0])):
        for c in show:
            image = images01[int(picked[c][0])]
            prompt = template.format(name=classes[c].replace("_", " "))
            edits = [pipe([prompt], init_images=image[None], options=options.replace(strength=s),
                          progress=False).images[0, 0] for s in STRENGTHS]  # fmt: skip
            rows.append(torch.stack([image, *edits]))
    size = images01.shape[-1]
    mask = right_half(size)
    for c in show:
        image = images01[int(low[c][0])]
        masked = torch.where(mask[0] > 0, torch.ones_like(image) * 0.5, image)
        fills = [pipe([pipe.training_prompts[classes[k]][0]], init_images=image[None], mask=mask,
                      options=options, progress=False).images[0, 0]
                 for k in (c, (c + 1) % len(classes))]  # fmt: skip
        rows.append(torch.stack([image, masked, *fills]))
    columns = max(len(r) for r in rows)  # blank cells after the shorter rows
    blank = torch.ones_like(rows[0][0])
    grid = torch.stack([torch.cat([r, blank.expand(columns - len(r), *blank.shape)]) for r in rows])
    big = interpolate(grid.flatten(0, 1), scale_factor=4, mode="nearest")
    save_grid(big.unflatten(0, grid.shape[:2]), path)
    print(f"picture: {path}")


def main() -> None:
    at = sys.argv.index("--picture") if "--picture" in sys.argv else None
    path = None if at is None else sys.argv[at + 1]
    args = [a for i, a in enumerate(sys.argv[1:], 1)
            if a != "--smoke" and (at is None or i not in (at, at + 1))]  # fmt: skip
    ckpt, n, _, options, pipe, datamodule, judge = judged_checkpoint(args, images=40)
    classes = datamodule.class_names
    real, _ = real_sets(datamodule, 1)
    scale = same_class_distance(penultimate_features(judge, real[0]), real[1])
    sections = []
    for attribute in (a for a in datamodule.attributes if a.binned):
        templates = pair_templates(attribute, datamodule.caption_templates)
        if templates is not None:
            rows = edit_rows(pipe, judge, attribute, templates, real, classes, n, options, scale)
            sections.append(f"**{attribute.name}**\n\n" + "\n".join(rows))
            if path is not None and attribute is datamodule.attributes[0]:
                picture(pipe, attribute, templates, real, classes, options,
                        OUT / "edit.png" if SMOKE else Path(path))  # fmt: skip
    sections.append("**inpainting the right half**\n\n" + "\n".join(
        inpaint_rows(pipe, judge, real, classes, n, options)))  # fmt: skip
    guidance = options.guidance(pipe.spec.guidance)
    record(
        f"Editing real held-out pictures with a prompt ({ckpt})",
        "\n\n".join(sections),
        f"Up to {n} held-out images per class and set; {options.sampler} {options.steps} steps, "
        f"{guidance}, EMA weights. AUC: the outputs' measure over the inputs' the asked way; "
        "moved: the share of pairs moved the asked way; class kept: the judge names the input's "
        "class; RMS: pixel difference in [0, 1]; feature distance: in the judge's penultimate "
        "features ÷ the mean distance of two real images of a class. Strength 1 draws from "
        "noise.",
    )


if __name__ == "__main__":
    main()
