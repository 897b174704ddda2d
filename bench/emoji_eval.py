"""The emoji concept evaluation with a third artist's real emoji beside the drawn ones: OpenMoji
(CC BY-SA 4.0; for calibration only, never trained on) from the npm registry (``npm pack
openmoji``, or a ``.tgz`` given with ``--openmoji``), its SVGs rendered at 64 px by cairosvg
(the ``bench`` extra) into ``data/openmoji/png/<code>.png``, then the evaluate CLI on a checkpoint
with ``concept_calibration`` pointing there. The table goes to bench/RESULTS.md.

    python bench/emoji_eval.py <ckpt_path> [evaluate overrides ...] [--openmoji <tgz>]

The tarball is read as a stranger's: only regular members under ``package/color/svg/`` named
``*.svg``, none outside the package or a link, each at most 1 MB.
"""

import io
import subprocess
import sys
import tarfile
from pathlib import Path

from common import ROOT, config, option, record

from diffusion_lit.evaluate import evaluate
from diffusion_lit.evaluation.report import concept_table

MAX_SVG_BYTES = 2**20
SIZE = 64


def fetch(folder: Path) -> Path:
    """OpenMoji's npm tarball in ``folder`` (``npm pack`` the first time)."""
    folder.mkdir(parents=True, exist_ok=True)
    found = sorted(folder.glob("openmoji-*.tgz"))
    if not found:
        subprocess.run(["npm", "pack", "openmoji", "--pack-destination", str(folder)],
                       check=True, capture_output=True)  # fmt: skip
        found = sorted(folder.glob("openmoji-*.tgz"))
    return found[-1]


def render(tgz: Path, out: Path) -> int:
    """Each emoji SVG of the tarball as ``<out>/<code>.png`` (lower case, as the emoji
    packages name theirs), on white; returns how many (an SVG cairosvg cannot draw is left
    out and counted in a line)."""
    import cairosvg
    from PIL import Image

    from diffusion_lit.images import on_white

    out.mkdir(parents=True, exist_ok=True)
    count, failed = 0, 0
    with tarfile.open(tgz, "r:gz") as archive:
        for member in archive:
            name = member.name
            if ".." in Path(name).parts or not name.startswith("package/color/svg/"):
                continue
            if not member.isfile() or not name.endswith(".svg") or member.size > MAX_SVG_BYTES:
                continue
            svg = archive.extractfile(member).read(MAX_SVG_BYTES)
            try:
                png = cairosvg.svg2png(bytestring=svg, output_width=SIZE, output_height=SIZE)
            except Exception:  # a construct cairosvg does not draw (markers without a node)
                failed += 1
                continue
            with Image.open(io.BytesIO(png)) as image:
                on_white(image).save(out / f"{Path(name).stem.lower()}.png")
            count += 1
    if failed:
        print(f"{failed} SVGs of {tgz} could not be drawn by cairosvg: left out")
    return count


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    args = [a for a in args if a != option("--openmoji")]
    ckpt, *overrides = args
    folder = ROOT / "data" / "openmoji"
    tgz = Path(option("--openmoji") or fetch(folder))
    pngs = folder / "png"
    if not any(pngs.glob("*.png")):
        print(f"rendered {render(tgz, pngs)} OpenMoji emoji into {pngs}")
    cfg = config([f"ckpt_path={ckpt}", "data=emoji", f"concept_calibration={pngs}", *overrides],
                 name="evaluate")  # fmt: skip
    result = evaluate(cfg)
    c = result["concepts"]
    notes = (
        f"The judge: {result['classifier_accuracy']:.1%} subcategory accuracy on held-out real "
        f"images; sampling {result['images_per_second']:.1f} images/s. Rephrasings: "
        + ", ".join(f"'{p}'" for p in c["phrasings"])
        + ". Another artist's: OpenMoji (CC BY-SA 4.0), rendered from its SVGs, "
        f"{c['calibration']['unseen_style']['images']} images of the concepts trained on."
    )
    record(f"The emoji concept evaluation ({ckpt})", concept_table(c), notes)


if __name__ == "__main__":
    main()
