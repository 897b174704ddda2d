"""Building objects from Hydra config nodes."""

from hydra.errors import InstantiationException
from hydra.utils import instantiate


def build(node, **kwargs):
    """``hydra.utils.instantiate`` that lets the target's own error through unwrapped: for bad
    input that error's message is the one that names the problem and the fix."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if err.__cause__ is None:
            raise
        raise err.__cause__ from None
