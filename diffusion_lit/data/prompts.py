"""Class names → text prompts."""

from string import Formatter

from diffusion_lit.errors import UserError

PLACEHOLDERS = {"name", "Name"}


def class_prompts(class_names: list[str], templates: list[str]) -> list[list[str]]:
    """One prompt per (class, template). Templates use ``{name}`` ("Draw a {name}" → "Draw a
    six") or ``{Name}`` for the capitalised name ("{Name}" → "Orchids")."""
    if not templates:
        raise UserError("data.prompt_templates is empty: give at least one, e.g. 'Draw a {name}'.")
    for template in templates:
        try:
            fields = {f for _, f, _, _ in Formatter().parse(template) if f is not None}
        except ValueError as err:  # an unmatched brace
            fields = {str(err)}
        if not fields or not fields <= PLACEHOLDERS:
            raise UserError(
                f"data.prompt_templates: {template!r} must name the class with {{name}} or "
                "{Name} and nothing else in braces, e.g. 'Draw a {name}'."
            )
    names = [n.replace("_", " ") for n in class_names]
    return [[t.format(name=n, Name=n[:1].upper() + n[1:]) for t in templates] for n in names]
