"""What a photo id may be, checked wherever an id is about to become part of a path.

Ids come from outside: S3 listings, file lists, plan parts a Processing job is handed, member
names in tar shards. Each becomes a file name (``<cache>/<id>.jpg``, ``<split>/<count>/<id>.jpg``,
``<id>.jpg`` in a shard), so an id of ``../x`` would read or write outside its folder. ABID ids
are digits (``00523``); the product also accepts letters, ``_`` and ``-`` (test sets, other
sources). A dot is refused too: a WebDataset key ends at the first dot of a member name, so an
id with one would not survive a shard.
"""

from __future__ import annotations

import re

#: The one pattern of a photo id: a plain file stem, no separators, dots or leading dash.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
ID_RULE = "1-128 letters, digits, '_' or '-', starting with a letter or digit"


def is_photo_id(value: object) -> bool:
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def check_photo_id(value: object) -> str:
    """``value`` when it is a photo id; ``ValueError`` naming it and the rule otherwise (the
    caller adds where it came from)."""
    if not is_photo_id(value):
        raise ValueError(f"id {value!r} is not a photo id ({ID_RULE})")
    return str(value)
