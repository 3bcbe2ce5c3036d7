"""Problems in users' data, as values with a location; and the two operational exceptions.

First in the flow: imports nothing from sib. A `Problem` is what a user must fix in a file
(`path:line[:col]: [code] message`). Readers and checkers collect every problem they find
and return them; they never print and never stop at the first. Exceptions are only for
operational failures (`SibError`: a file that cannot be read, a locked workspace) and for
handing a collected list up to the CLI (`ProblemsFound`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a user's file.

    path: the file as the user named it (relative where possible).
    line: 1-based line (or spreadsheet row) number, or None when the problem is the file.
    col: 1-based column number, or None.
    code: stable reason code (tests and scripts match on it, never on wording).
    message: what was found, what was expected and how to fix it.
    """

    path: str
    line: int | None
    col: int | None
    code: str
    message: str

    @property
    def location(self) -> str:
        loc = self.path
        if self.line is not None:
            loc += f":{self.line}"
            if self.col is not None:
                loc += f":{self.col}"
        return loc

    def __str__(self) -> str:
        return f"{self.location}: [{self.code}] {self.message}"

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "line": self.line,
            "col": self.col,
            "code": self.code,
            "message": self.message,
        }


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Problems in reading order: by file, line, column, then code (deterministic)."""
    return sorted(
        problems,
        key=lambda p: (p.path, p.line or 0, p.col or 0, p.code, p.message),
    )


class SibError(Exception):
    """An operational failure, reported by the CLI as one line (exit 1)."""


class ProblemsFound(Exception):
    """Problems in users' files that stop an operation; the CLI lists all of them (exit 1)."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = sort_problems(problems)
        super().__init__(f"{len(self.problems)} problem(s)")
