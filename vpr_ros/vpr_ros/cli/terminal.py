"""Stored strings on a terminal: what a map, a bag or a labels file holds is shown, never obeyed.

Labels, OCR text, robot and session ids, paths and bag topics come from files anyone can write. Printed
raw, an escape sequence in one retitles or clears the terminal, hides the lines before it, or fakes
output; a Unicode bidi control reverses the text after it on screen. :func:`printable` shows each such
character as a visible escape (``\\x1b``, ``\\u202e``) and leaves every other character, any script,
as it is. Every command that prints stored strings prints them through it (docs/map_tools.md).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

__all__ = ["printable", "printable_json", "say", "EscapeLogRecords"]

#: C0 controls (newline and tab too: a label must not start a fake output line), DEL, C1 controls,
#: the bidi embeddings/overrides/isolates/marks, and the Unicode line/paragraph separators.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
#: the same less C0, which ``json.dumps`` escapes itself (its newlines between items are layout)
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _visible(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: object) -> str:
    """``str(text)`` with control characters and bidi controls shown as ``\\xNN`` / ``\\uNNNN``."""
    return _UNSAFE.sub(_visible, str(text))


def printable_json(text: str) -> str:
    """JSON text (``json.dumps``) safe for a terminal and still the same JSON: such characters can only
    be inside strings, where ``\\uNNNN`` decodes to the very same character."""
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def say(text: object = "", file: TextIO | None = None) -> None:
    """``print(printable(text))``: one line of output that may hold stored strings."""
    print(printable(text), file=sys.stdout if file is None else file)


class EscapeLogRecords(logging.Filter):
    """A handler filter: log messages (warnings quote bag topics and messages) escaped like output."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = printable(record.getMessage()), None
        return True
