"""Regular expressions given in configuration, labels and scopes: checked in one place."""
from __future__ import annotations

import re


def check_regex(value: str | None) -> str | None:
    """The value, or a ValueError for a person when it is not a regular expression."""
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from None
    return value
