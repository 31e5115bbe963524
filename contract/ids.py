"""Identifiers: plantation, field, gateway and sensor ids.

One pattern for all of them, checked wherever an id enters (config, CLI, payload, topic), so
an id can be used unescaped in a topic level, a file name and an InfluxDB tag.
"""

import re
from typing import Annotated

from pydantic import StringConstraints

IDENT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
IDENT_RULE = (
    "lower-case letters, digits, '_' and '-', at most 63 characters, "
    "starting with a letter or digit"
)
""":data:`IDENT_PATTERN` in words, for messages."""
_IDENT_RE = re.compile(IDENT_PATTERN)


class InvalidIdentifier(ValueError):
    """An id does not match :data:`IDENT_PATTERN`."""


def check_ident(value: str, what: str = "identifier") -> str:
    """Return ``value`` if it is a valid id, else raise :class:`InvalidIdentifier`.

    ``what`` names the id in the message, e.g. ``"gateway id"``.
    """
    if not isinstance(value, str) or not _IDENT_RE.fullmatch(value):
        raise InvalidIdentifier(f"{what} {value!r} must match {IDENT_PATTERN} ({IDENT_RULE})")
    return value


Ident = Annotated[str, StringConstraints(pattern=IDENT_PATTERN)]
"""A pydantic field type for ids (checked in pydantic-core: batches are validated per reading)."""
