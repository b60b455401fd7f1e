"""Message ids and the rules of history.

Ids have the shape `<milliseconds>-<sequence>` (a Redis stream id) on every
backend, increase within their stream, and compare as integer pairs.
"""

import re

ID = re.compile(r"(\d{1,20})-(\d{1,20})")


def parse_id(value: object) -> tuple[int, int] | None:
    """The sortable key of an id, or None when it is not one."""
    if not isinstance(value, str):
        return None
    match = ID.fullmatch(value)
    if match is None:
        return None
    return int(match[1]), int(match[2])


def format_id(key: tuple[int, int]) -> str:
    return f"{key[0]}-{key[1]}"
