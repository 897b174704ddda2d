"""Class names → text prompts, through templates such as "Draw a {name}"."""

from string import Formatter

from diffusion_lit.errors import UserError

PLACEHOLDERS = {"name", "Name"}


def check_templates(templates: list[str], where: str = "data") -> None:
    """Refuses, in one line, no templates or one that does not name the class with ``{name}``
    or ``{Name}`` (and nothing else in braces). ``where`` names the config keys in errors."""
    if not templates:
        raise UserError(
            f"{where}.prompt_templates is empty: give at least one, e.g. 'Draw a {{name}}'."
        )
    for template in templates:
        try:
            fields = {f for _, f, _, _ in Formatter().parse(template) if f is not None}
        except ValueError as err:  # an unmatched brace
            fields = {str(err)}
        if not fields or not fields <= PLACEHOLDERS:
            raise UserError(
                f"{where}.prompt_templates: {template!r} must name the class with {{name}} or "
                "{Name} and nothing else in braces, e.g. 'Draw a {name}'."
            )


def class_names_of(classes: list[str], synonyms: dict | None = None, where: str = "data"):
    """Each class's names: its own (underscores as spaces) and then its ``synonyms``."""
    synonyms = dict(synonyms or {})
    unknown = sorted(set(synonyms) - set(classes))
    if unknown:
        raise UserError(
            f"{where}.class_synonyms names {unknown}, which are not classes of the data; the "
            f"classes are {classes}."
        )
    names = []
    for name in classes:
        extra = synonyms.get(name) or []
        names.append(
            [name.replace("_", " "), *map(str, [extra] if isinstance(extra, str) else extra)]
        )
    return names


def class_prompts(
    class_names: list[str],
    templates: list[str],
    synonyms: dict | None = None,
    where: str = "data",
) -> list[list[str]]:
    """Every class's prompts: each template (``{name}``: "Draw a {name}" → "Draw a six";
    ``{Name}``: capitalised) with the class name and each of its ``synonyms`` ("six": ["6"]).
    The first prompt of a class is the first template with its name. Classes with fewer names
    repeat their prompts in order, so every class has as many (the prompt bank is a
    classes × prompts table). ``where`` names the config keys in errors."""
    check_templates(templates, where)
    per_class = [
        [t.format(name=n, Name=n[:1].upper() + n[1:]) for n in names for t in templates]
        for names in class_names_of(class_names, synonyms, where)
    ]
    return padded(per_class)


def padded(rows: list[list]) -> list[list]:
    """Each row's items repeated in order up to the longest row's length: the classes ×
    captions table a model keeps (a class's captions, or an image's caption positions)."""
    width = max(map(len, rows))
    return [[row[i % len(row)] for i in range(width)] for row in rows]
