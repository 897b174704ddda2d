"""A request read in the model's own words: the class it names and, for each attribute, the word
it means or none ("a chunky 7, tilted to the right" → seven, thickness: thick, slant: slanted
right), said back as the caption that says exactly that ("a thick seven, slanted right"), which
the network was taught to draw. A text encoder places a phrasing no caption used off the
captions' manifold, where the network never learnt what to draw; the words it knows, found in
the request, keep the class and each attribute.

The class is a class name or synonym the request says (whole words), else the class of its
nearest caption. An attribute's word is the one whose form the request says word for word (the
longest: the word itself, one of its synonyms — the data config's ``attribute_synonyms``, kept
in the model — or the part of it no other word of the attribute has: "left" of "slanted left");
else the word with a form most similar to some run of the request's words (cosine of pooled
text embeddings), at least :data:`MATCH_AT_LEAST` and :data:`MARGIN` above every other word of
the attribute, so that a run as near to both ends ("pen": "thin pen", "thick pen") says
neither. The caption is the model's own one naming that class with exactly those words; for a
combination no caption of the class says (held out of training), a caption of another class
with those words, its class name replaced: still a caption whose every word the encoder and the
network have seen."""

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from diffusion_lit.text.embedding import TextEmbedding

# a run of a request's words this similar to a form of an attribute word (cosine of MiniLM's
# pooled embeddings), and by this margin more than to every other word's, says that word;
# calibrated on the digits' training vocabulary alone: every class prompt reads as no attribute,
# and each synonym, left out of the forms, is read as its own word more often than as another
MATCH_AT_LEAST, MARGIN = 0.5, 0.05
# runs of up to this many words are compared ("tilted to the right")
LONGEST_RUN = 4
# words that say nothing alone: a run of only these is never compared
STOPWORDS = frozenset(
    "a an the of to in on with and or please me my some one that this is it its very quite "
    "draw drawn drawing make show write generate picture image".split()
)


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:[-/'][a-z0-9]+)*", text.lower())


def whole(phrase: str) -> re.Pattern:
    """``phrase`` as whole words, for lower-cased text."""
    return re.compile(rf"(?<![a-z0-9]){re.escape(phrase.lower())}(?![a-z0-9])")


def says(text: str, phrase: str) -> int | None:
    """Where ``text`` says ``phrase`` as whole words (case-insensitive), None where it does not."""
    found = whole(phrase).search(text.lower())
    return None if found is None else found.start()


@dataclass(frozen=True)
class Reading:
    """How a request was read: its class, each attribute's word, and the caption drawn."""

    prompt: str
    class_name: str
    words: dict[str, str] = field(default_factory=dict)  # attribute → word; absent: none
    caption: str = ""
    named: bool = True  # the request names its class (else: its nearest caption's)

    def note(self) -> str:
        said = ", ".join(f"{a} {w}" for a, w in self.words.items()) or "no attribute"
        how = "" if self.named else " (nearest class)"
        return (
            f"{self.prompt!r} is read as {self.class_name}{how}, {said}: drawn as {self.caption!r}"
        )


class RequestReader:
    """Reads requests against a model's classes (``class_names`` and their captions,
    ``class_prompts``), its attributes' words (``attributes``) and their ``synonyms``;
    ``encode`` gives prompts' text embeddings (the model's text encoder)."""

    def __init__(
        self,
        class_names: list[str],
        class_prompts: list[list[str]],
        attributes: dict[str, list[str]],
        synonyms: dict[str, list[str]],
        encode: Callable[[list[str]], TextEmbedding],
    ):
        self.class_names, self.encode = list(class_names), encode
        self.names = [[n.replace("_", " "), *synonyms.get(n, [])] for n in class_names]
        self.attributes = {a: list(ws) for a, ws in attributes.items()}
        # every form of every attribute word: (attribute, word, form)
        self.forms = [(a, w, form) for a, ws in attributes.items() for w in ws
                      for form in dict.fromkeys([w, *synonyms.get(w, []), *_own_part(w, ws)])
                      ]  # fmt: skip
        self.captions = _caption_index(class_prompts, attributes)
        self.default = [captions[0] for captions in class_prompts]
        self._form_vectors: torch.Tensor | None = None

    def read(self, prompts: list[str], nearest_classes: list[int]) -> list[Reading]:
        """Each request's reading (``nearest_classes``: the class of each one's nearest
        caption, for a request that names none)."""
        runs = [_runs(self._without_class(p)) for p in prompts]
        every = list(dict.fromkeys(r for rs in runs for r in rs))
        vectors = self._vectors(every) if every else None
        where = {r: i for i, r in enumerate(every)}
        readings = []
        for prompt, mine, nearest in zip(prompts, runs, nearest_classes, strict=True):
            c = self._class_named(prompt)
            named = c is not None
            c = nearest if c is None else c
            rows = [where[r] for r in mine]
            words = self._words(prompt, vectors[rows] if rows else None)
            readings.append(Reading(prompt, self.class_names[c], words,
                                    self.caption(c, words), named))  # fmt: skip
        return readings

    def caption(self, c: int, words: dict[str, str]) -> str:
        """The caption of class ``c`` saying exactly ``words``: the model's own, or another
        class's with its class name replaced; with fewer words where none says them all."""
        words = dict(words)
        while True:
            key = frozenset(words.items())
            if (c, key) in self.captions:
                return self.captions[(c, key)]
            for (other, said), text in self.captions.items():
                if said != key or other == c:
                    continue
                name = next((n for n in self.names[other] if says(text, n) is not None), None)
                if name is not None:
                    at = says(text, name)
                    return text[:at] + self.names[c][0] + text[at + len(name) :]
            if not words:  # a class with no caption of its own words
                return self.default[c]
            words.popitem()  # the last attribute's word is dropped, then the one before

    def _class_named(self, prompt: str) -> int | None:
        """The class whose name or synonym the request says first (the longest there)."""
        found = [(at, -len(n), c) for c, names in enumerate(self.names) for n in names
                 if (at := says(prompt, n)) is not None]  # fmt: skip
        return min(found)[2] if found else None

    def _without_class(self, prompt: str) -> str:
        text = prompt.lower()
        for names in self.names:
            for n in sorted(names, key=len, reverse=True):
                text = whole(n).sub(" ", text)
        return text

    def _words(self, prompt: str, runs: torch.Tensor | None) -> dict[str, str]:
        """Each attribute's word the request says: a form said word for word (the longest),
        else the form most similar to one of its runs of words, by a margin."""
        found = {}
        similar = self._form_similarity(runs)
        for attribute, words in self.attributes.items():
            rows = [i for i, (a, _, _) in enumerate(self.forms) if a == attribute]
            said = [(len(self.forms[i][2]), self.forms[i][1]) for i in rows
                    if says(prompt, self.forms[i][2]) is not None]  # fmt: skip
            if said:
                found[attribute] = max(said)[1]
            elif similar is not None and len(words) > 1:
                best = {w: max(similar[i] for i in rows if self.forms[i][1] == w) for w in words}
                first, second = sorted(best.values(), reverse=True)[:2]
                if first >= MATCH_AT_LEAST and first - second >= MARGIN:
                    found[attribute] = max(best, key=best.get)
        return found

    def _form_similarity(self, runs: torch.Tensor | None) -> list[float] | None:
        """Each form's highest cosine to a run of the request's words."""
        if runs is None or not self.forms:
            return None
        if self._form_vectors is None:
            self._form_vectors = self._vectors([f for _, _, f in self.forms])
        return (runs @ self._form_vectors.T).max(dim=0).values.tolist()

    def _vectors(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.encode(texts).pooled.float().cpu(), dim=-1)


def _own_part(word: str, words: list[str]) -> list[str]:
    """The words of ``word`` that no other of ``words`` has ("left" of "slanted left")."""
    others = {t for w in words if w != word for t in words_of(w)}
    own = [t for t in words_of(word) if t not in others and t not in STOPWORDS]
    return own if len(words_of(word)) > 1 else []


def _runs(text: str) -> list[str]:
    """Every run of up to :data:`LONGEST_RUN` consecutive words, but runs of stopwords alone."""
    words = words_of(text)
    return list(dict.fromkeys(
        " ".join(words[i : i + n])
        for n in range(1, LONGEST_RUN + 1)
        for i in range(len(words) - n + 1)
        if not set(words[i : i + n]) <= STOPWORDS
    ))  # fmt: skip


def _caption_index(class_prompts: list[list[str]], attributes: dict[str, list[str]]) -> dict:
    """(class, the words a caption says) → the class's first caption saying exactly them."""
    index: dict = {}
    for c, captions in enumerate(class_prompts):
        for text in captions:
            said = {}
            for attribute, ws in attributes.items():
                # the longest word said ("slanted right" before "right")
                found = sorted((w for w in ws if says(text, w) is not None), key=len)
                if found:
                    said[attribute] = found[-1]
            index.setdefault((c, frozenset(said.items())), text)
    return index
