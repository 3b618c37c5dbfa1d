"""Facts of the Amazon Bin Image Dataset's own format, read by training and data preparation.

The public bucket ``aft-vbi-pds`` holds ``bin-images/<id>.jpg`` and ``metadata/<id>.json``; the
count is the metadata's ``EXPECTED_QUANTITY``. Ids are file stems and stay strings: ``523`` and
``00523`` are different photos.
"""

from __future__ import annotations

import json

BUCKET = "aft-vbi-pds"
IMAGES_PREFIX = "bin-images/"
METADATA_PREFIX = "metadata/"
QUANTITY_KEY = "EXPECTED_QUANTITY"


def parse_expected_quantity(data: bytes | str) -> int:
    """The count in one ``metadata/<id>.json``; ``ValueError`` naming what is wrong otherwise.

    A boolean or a float is refused rather than coerced: ``true`` or ``2.5`` items is a broken
    record, not a count.
    """
    try:
        quantity = json.loads(data)[QUANTITY_KEY]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"no readable {QUANTITY_KEY}: {type(exc).__name__}: {exc}") from None
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise ValueError(f"{QUANTITY_KEY} {quantity!r} is not an integer")
    return quantity
