"""Parsing of small option strings, with errors that name the option."""

import json
from typing import Any, Optional


def parse_range(value: Optional[str], option: str, vocab_size: Optional[int] = None) -> Optional[tuple[int, int]]:
    """Parse 'a,b' into (a, b) with 4 <= a < b (<= vocab_size when given)."""
    if value is None or value == "":
        return None
    parts = value.split(",")
    try:
        start, end = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"{option} expects 'start,end' (two integers), got {value!r}") from None
    if not 4 <= start < end or (vocab_size is not None and end > vocab_size):
        limit = f" and end <= {vocab_size} (the dictionary size)" if vocab_size is not None else ""
        raise ValueError(f"{option} expects 4 <= start < end{limit}, got {value!r}")
    return start, end


def parse_json_dict(value: Optional[str], option: str) -> dict[str, Any]:
    """Parse a JSON object given on the command line (e.g. --eval-args)."""
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as err:
        raise ValueError(f"{option} must be a JSON object, got {value!r}: {err}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{option} must be a JSON object, got {value!r}")
    return parsed
