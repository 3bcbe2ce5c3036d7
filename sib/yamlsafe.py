"""Read a small YAML file into plain data, remembering the line of every key and value.

Sits after problems/money/period and before contract (and the model assumptions reader).
Built on PyYAML's event stream, never its constructors, so that:

- every mapping key and value keeps its line and column;
- duplicate keys, aliases (`*x`, the "billion laughs" bomb), explicit tags, several
  documents, nesting deeper than `MAX_DEPTH` and files over `MAX_BYTES` are problems with
  a location, not crashes, hangs or silent overwrites;
- scalars are typed by YAML 1.2 core rules only: `true`/`false`, `null`, integers, and
  decimals (as `Decimal`, never float). Everything else stays text, so dates stay strings
  until validated and `no` means "no", not False.

Must not validate meaning (that is contract.py's job) or touch any file but the one named.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from sib.problems import Problem

MAX_BYTES = 1_048_576  # 1 MiB: a large contract is 20 kB
MAX_DEPTH = 32

Loc = tuple  # a path into the data: keys (str) and list indices (int)

_INT = re.compile(r"^[-+]?[0-9]+$")
_DEC = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_NULL = {"", "~", "null", "Null", "NULL"}
_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}

# control characters (line breaks, ESC, ...) and bidirectional overrides, which must not
# reach a message verbatim: a message is one line, and a terminal must not obey a cell
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def quoted(value: object, limit: int = 60) -> str:
    """A value from a user's file as a message quotes it: in single quotes, at most `limit`
    characters (then '…'), control characters written as escapes (`\\n`, `\\x1b`).

    Hostile files put line breaks, terminal escapes or a megabyte in a cell; the message
    must stay one short line that says which value was wrong.
    """
    text = str(value)
    cut = len(text) > limit
    text = _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"),
                            text[:limit])
    return f"'{text}{'…' if cut else ''}'"


try:  # libyaml is faster; both parsers are iterative state machines (no recursion)
    _Loader = yaml.CSafeLoader  # type: ignore[attr-defined]
except AttributeError:  # pragma: no cover - depends on the PyYAML build
    _Loader = yaml.SafeLoader


@dataclass
class YamlDoc:
    """A parsed file: `data` plus where each part of it was written.

    data: dicts, lists, str, int, Decimal, bool, None (None also when nothing was read).
    lines: loc → 1-based line of the value at loc (for mappings/lists: where they start).
    key_lines: loc → 1-based line of the key that introduces loc.
    problems: what made the file unreadable; when not empty, `data` is None.
    raw: the exact bytes parsed (b"" when given text), so a caller that must keep a copy of
      the file keeps the very bytes it read, not a second read of a file that may change.
    """

    path: str
    data: Any = None
    lines: dict = field(default_factory=dict)
    key_lines: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)
    raw: bytes = b""

    def line_of(self, loc: Loc) -> int | None:
        """Line of the deepest known part of `loc` (the key's line for a mapping entry)."""
        loc = tuple(loc)
        while loc:
            if loc in self.key_lines:
                return self.key_lines[loc]
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), 1)


def scalar_value(text: str, plain: bool) -> Any:
    """Type a scalar by YAML 1.2 core rules; quoted scalars are always text."""
    if not plain:
        return text
    if text in _NULL:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if _INT.match(text):
        try:
            return int(text)
        except ValueError:  # over Python's 4,300-digit limit for int(): still exact
            return Decimal(text)
    if _DEC.match(text):
        try:
            return Decimal(text)
        except InvalidOperation:  # pragma: no cover - the regex admits only valid forms
            return text
    return text


def read_yaml_file(path: Path, shown: str | None = None) -> YamlDoc:
    """Read and parse one YAML file; operational errors become problems too."""
    shown = shown or str(path)
    doc = YamlDoc(shown)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            doc.problems.append(Problem(
                shown, None, None, "too-large",
                f"the file is {size:,} bytes; a contract file is at most {MAX_BYTES:,} bytes "
                "(a large contract is about 20 kB): check this is the right file",
            ))
            return doc
        raw = path.read_bytes()[: MAX_BYTES + 1]
    except OSError as e:
        doc.problems.append(Problem(shown, None, None, "unreadable",
                                    f"cannot read the file: {e.strerror or e}"))
        return doc
    return parse_yaml(raw, shown)


def _decode(raw: bytes, doc: YamlDoc) -> str | None:
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        doc.problems.append(Problem(
            doc.path, line, None, "not-text",
            "the file contains NUL bytes, so it is binary, not YAML text; "
            "save the contract as plain UTF-8 text"))
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        doc.problems.append(Problem(
            doc.path, line, None, "not-utf8",
            f"byte 0x{raw[e.start]:02x} is not UTF-8 text; save the file as UTF-8"))
        return None


def parse_yaml(raw: bytes | str, shown: str) -> YamlDoc:
    """Parse YAML text (bytes are decoded as UTF-8) into a YamlDoc."""
    doc = YamlDoc(shown)
    if isinstance(raw, bytes):
        doc.raw = raw
        if len(raw) > MAX_BYTES:
            doc.problems.append(Problem(shown, None, None, "too-large",
                                        f"the file is over {MAX_BYTES:,} bytes"))
            return doc
        text = _decode(raw, doc)
        if text is None:
            return doc
    else:
        text = raw
    try:
        _build(text, doc)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        what = (e.problem or "invalid YAML").strip()
        hint = ""
        lines = text.splitlines()
        if line and line <= len(lines) and "\t" in lines[line - 1]:
            hint = "; YAML indents with spaces, never tabs: replace the tab with spaces"
        doc.problems.append(Problem(shown, line, col, "not-yaml",
                                    f"this is not valid YAML: {what}{hint}"))
        doc.data = None
    except yaml.YAMLError as e:
        doc.problems.append(Problem(shown, None, None, "not-yaml",
                                    f"this is not valid YAML: {e}"))
        doc.data = None
    except RecursionError:  # pragma: no cover - the builder is iterative
        doc.problems.append(Problem(shown, None, None, "too-deep",
                                    "the file is nested too deeply"))
        doc.data = None
    if any(p.code != "duplicate-key" for p in doc.problems):
        doc.data = None  # duplicates keep the first value, so checking can go on
    return doc


class _Stop(Exception):
    pass


def _build(text: str, doc: YamlDoc) -> None:
    """Turn the event stream into data, with an explicit stack (no recursion)."""
    stack: list[list] = []  # frames: [container, loc, pending_key(or None), seen_keys]
    documents = 0
    root: Any = None
    have_root = False

    def add(value: Any, line: int, col: int, is_key_scalar: bool = False) -> None:
        nonlocal root, have_root
        if not stack:
            root = value
            have_root = True
            doc.lines[()] = line
            return
        frame = stack[-1]
        container, loc = frame[0], frame[1]
        if isinstance(container, list):
            sub = loc + (len(container),)
            container.append(value)
            doc.lines[sub] = line
            return
        key = frame[2]
        if key is None:
            raise AssertionError("value without key")  # pragma: no cover
        container[key[0]] = value
        doc.lines[loc + (key[0],)] = line
        frame[2] = None

    for event in yaml.parse(text, Loader=_Loader):
        line = event.start_mark.line + 1
        col = event.start_mark.column + 1
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                doc.problems.append(Problem(
                    doc.path, line, None, "multiple-documents",
                    "the file holds more than one YAML document (a second '---'); "
                    "a contract is one document: remove the extra '---' and what follows"))
                return
            continue
        if isinstance(event, yaml.AliasEvent):
            doc.problems.append(Problem(
                doc.path, line, col, "yaml-alias",
                f"an alias (*{quoted(event.anchor)[1:-1]}) is not allowed in this file: write "
                "the value "
                "out in full where it is needed"))
            return
        if isinstance(event, (yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            tag = event.tag
            implicit = event.implicit if isinstance(event, yaml.ScalarEvent) else (event.implicit,)
            if tag is not None and tag not in ("!", "tag:yaml.org,2002:str", "tag:yaml.org,2002:map",
                                               "tag:yaml.org,2002:seq") and not any(
                    implicit if isinstance(implicit, tuple) else (implicit,)):
                doc.problems.append(Problem(
                    doc.path, line, col, "yaml-tag",
                    f"the tag {quoted(tag)[1:-1]} is not allowed in this file: remove it and "
                    "write a plain value"))
                return
        if isinstance(event, yaml.ScalarEvent):
            plain = not event.style
            frame = stack[-1] if stack else None
            if frame is not None and isinstance(frame[0], dict) and frame[2] is None:
                key = event.value
                kloc = frame[1] + (key,)
                if key in frame[0] or key in frame[3]:
                    first = doc.key_lines.get(kloc)
                    doc.problems.append(Problem(
                        doc.path, line, col, "duplicate-key",
                        f"the key {quoted(key)} appears twice in this mapping (first at line "
                        f"{first}); "
                        "keep one and delete the other"))
                    # keep reading into a throwaway slot so every duplicate is reported
                    frame[2] = (key + "\x00dup" + str(line),)
                    frame[3].add(key)
                    continue
                frame[2] = (key,)
                frame[3].add(key)
                doc.key_lines[kloc] = line
                continue
            add(scalar_value(event.value, plain), line, col)
            continue
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            frame = stack[-1] if stack else None
            if frame is not None and isinstance(frame[0], dict) and frame[2] is None:
                doc.problems.append(Problem(
                    doc.path, line, col, "bad-key",
                    "a mapping key must be a plain word, not a list or mapping"))
                return
            if len(stack) >= MAX_DEPTH:
                doc.problems.append(Problem(
                    doc.path, line, col, "too-deep",
                    f"the file is nested more than {MAX_DEPTH} levels deep; a contract "
                    "needs at most 6: check the indentation"))
                return
            container: Any = {} if isinstance(event, yaml.MappingStartEvent) else []
            if stack:
                parent = stack[-1]
                if isinstance(parent[0], list):
                    loc = parent[1] + (len(parent[0]),)
                else:
                    loc = parent[1] + (parent[2][0],)
            else:
                loc = ()
            add(container, line, col)
            stack.append([container, loc, None, set()])
            continue
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            frame = stack.pop()
            if isinstance(frame[0], dict):
                for k in [k for k in frame[0] if "\x00dup" in k]:
                    del frame[0][k]
            continue
    doc.data = root if have_root else None
