"""Some of a dataset's classes, by name (``data.classes``): the images of those classes, with
the classes numbered in the order given."""

from torch.utils.data import Dataset

from diffusion_lit.errors import UserError


class ClassSubset(Dataset):
    """The images of ``dataset`` whose class is one of ``names`` (``classes`` is ``names``,
    ``targets`` index it), with what else the dataset says about them: their captions and
    files, their pixels, their emoji names."""

    def __init__(self, dataset: Dataset, names: list[str]):
        known = list(dataset.classes)
        missing = [n for n in names if n not in known]
        if missing or not names:
            raise UserError(
                f"data.classes={list(names)}: {', '.join(missing) or 'no class'} "
                f"{'is' if len(missing) == 1 else 'are'} not among the data's classes "
                f"({', '.join(known)}); name some of those."
            )
        new = {known.index(n): i for i, n in enumerate(names)}
        self.dataset, self.classes = dataset, list(names)
        self.indices = [i for i, t in enumerate(dataset.targets) if int(t) in new]
        self.targets = [new[int(dataset.targets[i])] for i in self.indices]
        # what the dataset has of these: captions and files, pixels (for the measure cache's
        # fingerprint), emoji names, tones, styles and codes (for the concept evaluation)
        for name in ("captions", "files", "images", "data", "concepts", "tones", "styles", "codes"):
            values = getattr(dataset, name, None)
            if values is not None:
                setattr(self, name, [values[i] for i in self.indices])
        self.heldout = getattr(dataset, "heldout", None)  # an emoji set's held-out pairs
        if not self.indices:
            raise UserError(f"data.classes={list(names)}: the data has no images of them.")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        image, _ = self.dataset[self.indices[index]]
        return image, self.targets[index]
