"""A caption per training image: the words for what each image shows (its attributes, binned
within its class from a measure of the image) composed with the class vocabulary into varied
captions ("a thick seven, slanted right", "a thin 7", "a seven"), or the captions a folder of
images comes with.

A model keeps its captions as a classes × captions table (:class:`CaptionTable`), the first of
each class its default prompt; each training image may be captioned by some positions of its
class's row (``rows``), of which training draws one at random every step."""

import itertools
import math
from dataclasses import dataclass, field
from string import Formatter

import numpy as np

from diffusion_lit import checks
from diffusion_lit.errors import BadValue, UserError
from diffusion_lit.text.templates import class_names_of, class_prompts, padded

# Bounds on what a folder's captions or a model file can make a model hold: every distinct
# caption is encoded and kept while training (a few hundred floats per token; a text encoder
# reads only its first few dozen tokens of a caption, 64 for MiniLM, 77 for CLIP), and the
# classes × captions table is indexed per training image.
MAX_CAPTION_CHARS = 1_000
MAX_CAPTIONS_PER_IMAGE = 64
MAX_DISTINCT_CAPTIONS = 16_384
MAX_TABLE_CAPTIONS = 1_048_576  # classes × captions per class, the table as it is padded


def check_table(class_prompts: list[list[str]], source: str) -> None:
    """Refuses a captions table beyond the bounds, naming ``source`` (a folder, a file)."""
    width = max(map(len, class_prompts), default=0)
    cells = len(class_prompts) * width
    distinct = len({t for row in class_prompts for t in row})
    longest = max((len(t) for row in class_prompts for t in row), default=0)
    too_many = distinct > MAX_DISTINCT_CAPTIONS or cells > MAX_TABLE_CAPTIONS
    if too_many or longest > MAX_CAPTION_CHARS:
        raise UserError(
            f"{source}: {distinct:,} distinct captions, {len(class_prompts)} classes × {width:,} "
            f"(the largest class's), the longest {longest:,} characters, is more than a model "
            f"holds (at most {MAX_DISTINCT_CAPTIONS:,} distinct captions, "
            f"{MAX_TABLE_CAPTIONS:,} in the table, each at most {MAX_CAPTION_CHARS:,} "
            "characters): caption with fewer distinct texts or split the data."
        )


@dataclass(frozen=True)
class Attribute:
    """A property of an image put into words: the measure ``measure`` (one of
    :data:`diffusion_lit.data.measures.MEASURES`), binned within each class into as many equal
    shares as ``words`` (low to high), each share's word; a share whose word is null gets none,
    and its images' captions leave the attribute out. A measure that names its value itself
    (``colour``) takes no ``words``: the value is the word."""

    name: str
    measure: str
    words: tuple[str | None, ...] = ()

    @classmethod
    def from_config(cls, name: str, node) -> "Attribute":
        words = node.get("words") or ()
        checks.text("measure", node.get("measure"))
        if not all(w is None or (isinstance(w, str) and w.strip()) for w in words):
            raise BadValue(f"{name}.words", list(words), "a list of words or nulls, low to high")
        return cls(name, node["measure"], tuple(words))

    @property
    def binned(self) -> bool:
        return bool(self.words)

    @property
    def known_words(self) -> list[str]:
        return [w for w in self.words if w]

    def words_of(self, values: list, labels: list[int]) -> list[str | None]:
        """The word for each image: its value's share within its class (or the value itself)."""
        if not self.binned:
            return [str(v) for v in values]
        values, labels = np.asarray(values, dtype=float), np.asarray(labels)
        share = np.zeros(len(values), dtype=int)
        for c in np.unique(labels):
            mine = labels == c
            edges = np.quantile(values[mine], np.linspace(0, 1, len(self.words) + 1)[1:-1])
            share[mine] = np.searchsorted(edges, values[mine], side="right")
        return [self.words[s] for s in share]


def template_fields(template: str) -> set[str]:
    try:
        return {f for _, f, _, _ in Formatter().parse(template) if f is not None}
    except ValueError:  # an unmatched brace
        return {"?"}


@dataclass(frozen=True)
class CaptionTable:
    """Every class's captions (``class_prompts``: C lists of as many each, the first the class's
    default prompt) and, per training image, the positions in its class's list that caption it
    (``rows``, (N, K); None: any of its class's prompts)."""

    class_prompts: list[list[str]]
    rows: np.ndarray | None = None
    attributes: dict[str, list[str]] = field(default_factory=dict)  # the words they use
    words: dict[str, list[str | None]] = field(default_factory=dict)  # each image's


def described(
    classes: list[str],
    templates: list[str],
    synonyms: dict | None,
    attributes: list[Attribute],
    caption_templates: list[str],
    heldout: dict[str, list[str]] | None,
    words: dict[str, list[str | None]] | None = None,
    labels: list[int] | None = None,
    share: float = 0.5,
) -> CaptionTable:
    """The captions made from the class vocabulary (``templates`` × each class's names) and
    the attribute templates (``caption_templates``: ``{name}`` and attribute names, e.g. "a
    {thickness} {name}, {slant}"), every word of every attribute in them, but for the class ×
    word combinations ``heldout`` (word → classes) lists; and, given each image's ``words``
    (attribute → a word per image) and ``labels``, the positions that caption each image:
    the plain prompts, and the captions that name its own words, each attribute it has a word
    for named with probability ``share``."""
    known = {a.name: a for a in attributes}
    heldout = {w: set(cs) for w, cs in (heldout or {}).items()}
    _check(classes, templates, attributes, caption_templates, heldout)
    plain = class_prompts(classes, templates, synonyms)
    names = class_names_of(classes, synonyms)
    per_class, kinds = [], []  # kinds: per class, caption → (attributes it names, their words)
    for c, cls in enumerate(classes):
        captions = dict.fromkeys(plain[c])
        kind = {p: ((), ()) for p in captions}
        for template in caption_templates:
            named = tuple(sorted(template_fields(template) - {"name", "Name"}))
            options = [known[a].known_words or _values_of(known[a], words) for a in named]
            for combo in itertools.product(*options):
                if any(cls in heldout.get(w, ()) for w in combo):
                    continue
                for n in names[c]:
                    text = template.format(name=n, Name=n[:1].upper() + n[1:],
                                           **dict(zip(named, combo, strict=True)))  # fmt: skip
                    captions.setdefault(text)
                    kind.setdefault(text, (named, combo))
        per_class.append(list(captions))
        kinds.append(kind)
    table = padded(per_class)
    used = {a.name: a.known_words or _values_of(a, words) for a in attributes}
    if words is None or labels is None:
        return CaptionTable(table, attributes=used)
    rows = []
    for i, c in enumerate(labels):
        own = {a: words[a][i] for a in known}
        groups: dict[tuple, list[int]] = {}
        for k, text in enumerate(per_class[c]):
            named, combo = kinds[c][text]
            if all(own[a] == w for a, w in zip(named, combo, strict=True)):
                groups.setdefault(named, []).append(k)
        # each attribute named with probability ``share``, independently: a caption naming k
        # of them is drawn in proportion to (share / (1 − share))^k
        weights = [round(2 * (share / (1 - share)) ** len(named)) for named in groups]
        weights = [w // math.gcd(*weights) for w in weights]
        rows.append(_even(list(groups.values()), weights))
    return CaptionTable(table, _pad(rows), used, words)


def _values_of(attribute: Attribute, words: dict | None) -> list[str]:
    """The words of an attribute that names its value (colour): those the images have."""
    if words is None:
        return []
    return sorted({w for w in words[attribute.name] if w})


def _even(groups: list[list[int]], weights: list[int]) -> list[int]:
    """The groups' positions, each group repeated to ``weight`` × the longest's length: drawn
    in proportion to its weight."""
    width = max(map(len, groups))
    return [g[i % len(g)] for g, w in zip(groups, weights, strict=True) for i in range(w * width)]


def _pad(rows: list[list[int]]) -> np.ndarray:
    return np.array(padded(rows), dtype=np.int32)


def _check(classes, templates, attributes, caption_templates, heldout) -> None:
    names = {a.name for a in attributes}
    for template in caption_templates:
        fields = template_fields(template)
        if not fields & {"name", "Name"} or not fields <= names | {"name", "Name"}:
            raise UserError(
                f"data.caption_templates: {template!r} must name the class with {{name}} or "
                f"{{Name}} and may name attributes ({', '.join(sorted(names)) or 'none set'}) in "
                "braces, e.g. 'a {thickness} {name}'."
            )
    words = {w for a in attributes for w in a.known_words}
    for word, held in heldout.items():
        if word not in words or not held <= set(classes):
            raise UserError(
                f"data.heldout_combinations: {word}: {sorted(held)} must map an attribute word "
                f"({', '.join(sorted(words))}) to classes of the data ({', '.join(classes)})."
            )


def from_image_captions(
    classes: list[str], captions: list[list[str]], labels: list[int]
) -> CaptionTable:
    """The table of captions a folder of images comes with: each class's distinct captions, in
    order of appearance, and each image's own."""
    per_class: list[dict[str, None]] = [{} for _ in classes]
    for texts, c in zip(captions, labels, strict=True):
        per_class[c].update(dict.fromkeys(texts))
    per_class_list = [list(p) or [cls] for p, cls in zip(per_class, classes, strict=True)]
    check_table(per_class_list, "the captions")
    index = [{t: k for k, t in enumerate(p)} for p in per_class_list]
    table = padded(per_class_list)
    rows = [[index[c][t] for t in texts] for texts, c in zip(captions, labels, strict=True)]
    return CaptionTable(table, _pad(rows))


@dataclass(frozen=True)
class Remap:
    """Where one table's classes and caption positions went in a merged table."""

    classes: np.ndarray  # (C,) a class of the table → its class in the merged one
    positions: list[np.ndarray]  # per class: a position in its row → one in the merged row

    def rows(self, labels: list[int], rows: np.ndarray | None) -> np.ndarray:
        """Each image's caption positions in the merged table (``rows``: the table's; None:
        any of its class's captions)."""
        if rows is None:
            return _pad([list(self.positions[c]) for c in labels])
        return np.stack([self.positions[c][r] for c, r in zip(labels, rows, strict=True)])


def merged(
    tables: list[tuple[list[str], CaptionTable]],
) -> tuple[list[str], CaptionTable, list[Remap]]:
    """One table of the classes and captions of several (each with its class names), in order
    of first appearance: a class they share has the captions of each; and where each table's
    classes and positions went. A model extended with new data keeps its own captions first,
    so what it drew it still draws."""
    names: list[str] = []
    captions: dict[str, dict[str, None]] = {}
    attributes: dict[str, dict[str, None]] = {}
    for classes, table in tables:
        for name, row in zip(classes, table.class_prompts, strict=True):
            if name not in captions:
                names.append(name)
                captions[name] = {}
            captions[name].update(dict.fromkeys(row))
        for attribute, words in table.attributes.items():
            attributes.setdefault(attribute, {}).update(dict.fromkeys(words))
    per_class = [list(captions[n]) for n in names]
    check_table(per_class, "the merged captions")
    index = [{t: k for k, t in enumerate(p)} for p in per_class]
    remaps = []
    for classes, table in tables:
        where = np.array([names.index(n) for n in classes])
        positions = [
            np.array([index[c][t] for t in row])
            for c, row in zip(where, table.class_prompts, strict=True)
        ]
        remaps.append(Remap(where, positions))
    return (
        names,
        CaptionTable(padded(per_class), attributes={k: list(v) for k, v in attributes.items()}),
        remaps,
    )
