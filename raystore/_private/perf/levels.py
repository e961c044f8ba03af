"""The loads a sweep visits: a list (`1,4,16,64`) or a range (`1:256:x2` doubles, `8:64:+8` adds)."""

from __future__ import annotations

import itertools

from raystore.exceptions import InvalidArgument

MAX_LEVELS = 64


def parse_levels(text: str, what: str = "--concurrency") -> list[int]:
    text = text.strip()
    try:
        if ":" not in text:
            levels = [int(part) for part in text.split(",") if part.strip()]
        else:
            fields = text.split(":")
            if len(fields) > 3:
                raise ValueError
            start_text, stop_text, step_text = [*fields, "x2"][:3]
            start, stop = int(start_text), int(stop_text)
            levels = _range(start, stop, step_text.strip())
    except ValueError:
        raise InvalidArgument(
            f"{what} {text!r} is not a list like 1,4,16 nor a range like 1:256:x2 (or 8:64:+8)"
        ) from None
    if not levels or any(level < 1 for level in levels):
        raise InvalidArgument(f"{what} {text!r}: every level must be a whole number >= 1")
    if len(levels) > MAX_LEVELS:
        raise InvalidArgument(f"{what} {text!r} makes {len(levels)} levels; at most {MAX_LEVELS}")
    return levels


def _range(start: int, stop: int, step: str) -> list[int]:
    if start < 1 or stop < start:
        raise ValueError
    levels = []
    value = start
    if step.startswith("x"):
        factor = float(step[1:])
        if factor <= 1:
            raise ValueError
        while value <= stop and len(levels) <= MAX_LEVELS:
            levels.append(int(value))
            value = max(int(value) + 1, round(value * factor))
    elif step.startswith("+"):
        increment = int(step[1:])
        if increment < 1:
            raise ValueError
        levels = list(itertools.islice(range(start, stop + 1, increment), MAX_LEVELS + 1))
    else:
        raise ValueError
    return levels
