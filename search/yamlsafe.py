"""Reading a user's YAML file so that any bad input ends in one short line naming the file, never a traceback.

`yaml.safe_load` alone lets through three failures that a fuzzed space file hits: bytes that are not UTF-8 (the
message names no file), deep nesting (PyYAML's composer recurses: RecursionError), and alias bombs (nine levels of
anchors expanding nine-fold each are a 300-byte file that names 387 million values; quoting one in an error message
took 722 MB). `load_yaml` refuses all three before constructing anything, from PyYAML's event stream, which is
iterative and never expands an alias. `short` caps what any message quotes of a value.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml

MAX_DEPTH = 32  # a space nests 4 deep (sites → site → option → range); generous for hand-written files
MAX_VALUES = 100_000  # scalars and collections after expanding aliases; a large space has a few hundred
MAX_QUOTE = 200  # characters of a value that a message quotes

_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict, _REPR.maxlevel = 80, 80, 8, 8, 3


def short(value: Any) -> str:
    """`repr(value)`, shortened to at most MAX_QUOTE characters (nested and long values elided with '...')."""
    text = _REPR.repr(value)
    return text if len(text) <= MAX_QUOTE else text[: MAX_QUOTE - 3] + "..."


def load_yaml(path: Path) -> tuple[Any, str]:
    """(the parsed document, its text). Raises ValueError "<path>: <what>; <fix>" for any file that is not small,
    plain UTF-8 YAML (unreadable, not UTF-8, malformed, nested deeper than MAX_DEPTH, aliases expanding to more than
    MAX_VALUES values, or a tag whose value does not convert, such as `!!float abc`)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot be read ({err.strerror or err}); check the path and its permissions") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}); save the file as "
                         "UTF-8") from None
    try:
        _check_shape(text, path)
        return yaml.safe_load(text), text
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({_one_line(err)})") from None
    except (ValueError, TypeError) as err:  # a tag's constructor: `!!float abc`, `!!int x`, `!!timestamp 1-1`
        if str(err).startswith(f"{path}:"):
            raise
        raise ValueError(f"{path}: a tagged value does not convert ({_one_line(err)}); fix or remove the tag") from None


def _check_shape(text: str, path: Path) -> None:
    """Refuse deep nesting and alias bombs from the event stream (no recursion, no alias expanded)."""
    depth = 0
    sizes: dict[str, int] = {}  # anchor -> values it stands for, aliases inside it expanded
    stack: list[list[Any]] = [[None, 0]]  # per open collection: [its anchor, values inside so far]
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1 if event.start_mark else 0
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise ValueError(f"{path}: nested deeper than {MAX_DEPTH} levels (line {line}); a space nests at most "
                                 "4 deep (sites, site, option, range): flatten it")
            stack.append([event.anchor, 1])
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
            anchor, n = stack.pop()
            _add(stack, sizes, anchor, n, path, line)
        elif isinstance(event, yaml.ScalarEvent):
            _add(stack, sizes, event.anchor, 1, path, line)
        elif isinstance(event, yaml.AliasEvent):
            _add(stack, sizes, None, sizes.get(event.anchor, 1), path, line)


def _add(stack: list[list[Any]], sizes: dict[str, int], anchor: str | None, n: int, path: Path, line: int) -> None:
    if anchor is not None:
        sizes[anchor] = n
    stack[-1][1] += n
    if sum(frame[1] for frame in stack) > MAX_VALUES:
        raise ValueError(f"{path}: expands to more than {MAX_VALUES:,} values through YAML aliases (line {line}; an "
                         "alias bomb?); write the values out or use fewer aliases")


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= MAX_QUOTE else text[: MAX_QUOTE - 3] + "..."


__all__ = ["MAX_DEPTH", "MAX_QUOTE", "MAX_VALUES", "load_yaml", "short"]
