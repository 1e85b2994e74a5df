"""Docs that match the code (issue 19): every relative link in README.md and docs/*.md resolves to a
file (and heading anchor), and every ``vpr-ros ...`` command quoted in them parses with the real parser.

Commands come from fenced code blocks (``$ `` prompts, ``# comments`` and ``\\`` continuations allowed)
and inline code spans. Inline spans are often synopses: ``[optional]`` groups, ``a|b`` alternatives
(``\\|`` in tables), ``...``; each is expanded into a few concrete command lines (every optional
group left out; every group in with the first, then the second, ... alternative) and each must parse.
Placeholders (BAG, DIR, MAP, FILE, T, ...) stand as values; the numeric ones get a number. Output
lines (``vpr-ros replay: error: ...``) are not commands. Lines with shell syntax this test cannot
evaluate are listed in SKIPPED, by their text, and the test fails when one no longer occurs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

#: Placeholders that stand for numbers in synopses (`--rerank-k K`, `--id N`, `--gt-radius-m R`, `--rate HZ`).
NUMERIC = {"K": "5", "N": "1", "R": "1.0", "M": "1", "HZ": "10", "SEC": "1.0"}
#: Quoted command lines with shell syntax the test does not evaluate (substring of the line -> why).
SKIPPED: dict[str, str] = {}

_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_INLINE = re.compile(r"(`+)(.+?)\1")


def _blocks(text: str) -> tuple[list[str], list[str]]:
    """(lines of fenced code blocks with continuations joined, prose lines)."""
    code: list[str] = []
    prose: list[str] = []
    inside, pending = False, ""
    for line in text.splitlines():
        if _FENCE.match(line):
            inside, pending = not inside, ""
            continue
        if not inside:
            prose.append(line)
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        code.append(pending + line)
        pending = ""
    return code, prose


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = "".join(c for c in text if c in "-_ " or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    _, prose = _blocks(path.read_text())
    seen: dict[str, int] = {}
    out = set()
    for line in prose:
        m = re.match(r"^#{1,6}\s+(.*)", line)
        if m:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(path: Path) -> list[str]:
    _, prose = _blocks(path.read_text())
    text = _INLINE.sub("", "\n".join(prose))  # `[x](y)` inside inline code is not a link
    bad = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{path.name}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{path.name}: {target} (no heading with that anchor in {dest.name})")
    return bad


def quoted_commands(path: Path) -> list[tuple[str, str]]:
    """(kind, text) of every quoted `vpr-ros ...` command: kind "code" (a command line) or "inline"."""
    code, prose = _blocks(path.read_text())
    out = []
    for line in code:
        stripped = line.strip()
        stripped = stripped[2:] if stripped.startswith("$ ") else stripped
        if stripped.startswith("vpr-ros "):
            out.append(("code", stripped))
    for line in prose:
        for _, span in _INLINE.findall(line):
            if span.startswith("vpr-ros "):
                out.append(("inline", span.replace("\\|", "|")))
    return [(k, t) for k, t in out if not re.match(r"^vpr-ros [\w-]+:", t)]  # output lines, not commands


# -- synopsis expansion: [optional] groups, a|b alternatives, ... --------------------------------
def _tokens(text: str, kind: str) -> list[str] | None:
    try:
        words = shlex.split(text, comments=True)
    except ValueError:
        return None
    out: list[str] = []
    for w in words:
        lead = len(w) - len(w.lstrip("["))
        core = w.strip("[]") if "=" not in w else w.lstrip("[").rstrip("]")
        trail = len(w) - len(w.rstrip("]")) if core != w.rstrip("]") or w.endswith("]") else 0
        out += ["["] * lead + ([core] if core else []) + ["]"] * trail
    return out


def _parse_seq(tokens: list[str], i: int) -> tuple[list, int]:
    """A sequence up to a top-level `]` or the end: items are words, ("opt", alts) or ("alt", alts)."""
    alts: list[list] = [[]]
    while i < len(tokens) and tokens[i] != "]":
        tok = tokens[i]
        if tok == "[":
            inner, i = _parse_seq(tokens, i + 1)
            alts[-1].append(("opt", inner))
            i += 1  # the closing ]
        elif tok == "|":
            alts.append([])
            i += 1
        elif tok in ("...", "…"):
            i += 1
        else:
            alts[-1].append(("alt", [[w] for w in tok.split("|")]) if "|" in tok.strip("|") else tok)
            i += 1
    return (alts[0] if len(alts) == 1 else [("alt", alts)]), i


def _width(seq: list) -> int:
    n = 1
    for item in seq:
        if isinstance(item, tuple):
            kind, body = item
            n = max(n, len(body) if kind == "alt" else 1, *(
                _width(a) for a in (body if kind == "alt" else [body])))
    return n


def _expand(seq: list, k: int, optional: bool) -> list[str]:
    out: list[str] = []
    for item in seq:
        if isinstance(item, str):
            out.append(NUMERIC.get(item, item))
        elif item[0] == "opt":
            if optional:
                out += _expand(item[1], k, optional)
        else:
            alts = item[1]
            out += _expand(alts[min(k, len(alts) - 1)], k, optional)
    return out


def variants(text: str, kind: str) -> list[list[str]] | None:
    """Concrete argv lists (without `vpr-ros`) of one quoted command; None: shell syntax (skip)."""
    tokens = _tokens(text, kind)
    if tokens is None:
        return None
    if kind == "code" and any(t in ("&&", "||", ";", ">", "<", "2>") or "$(" in t for t in tokens):
        return None
    depth = 0
    for t in tokens:  # a `|` outside [...] in a command line is a pipe; inside, an alternative
        depth += (t == "[") - (t == "]")
        if kind == "code" and t == "|" and depth == 0:
            return None
    seq, _ = _parse_seq(tokens[1:], 0)
    if len(seq) == 1 and isinstance(seq[0], tuple) and seq[0][0] == "alt":  # `cmd A --x N | --y F`
        first = seq[0][1][0]
        words = [w for w in first[:next((i for i, w in enumerate(first) if isinstance(w, str) and w.startswith("-")),
                                        len(first))]]
        seq = [("alt", [first, *([*words, *a] if a and isinstance(a[0], str) and a[0].startswith("-") else a
                                 for a in seq[0][1][1:])])]
    out = [_expand(seq, 0, False)] + [_expand(seq, k, True) for k in range(_width(seq))]
    return [v for i, v in enumerate(out) if v not in out[:i]]


#: Errors an inline mention may give: `vpr-ros replay` or `vpr-ros replay --map-save` names a command
#: or an option without the rest of a command line; `--preset NAME` a placeholder for a choice.
_MENTION = re.compile(r"expected one argument|invalid choice: '[A-Z_]+'")


def _strict(parser: argparse.ArgumentParser, relaxed: bool) -> argparse.ArgumentParser:
    """The parser without option abbreviations (docs quote options in full), in every subcommand;
    ``relaxed``: no argument required either (for inline mentions)."""
    parser.allow_abbrev = False
    for group in parser._mutually_exclusive_groups:
        group.required = group.required and not relaxed
    for action in parser._actions:
        action.required = action.required and not relaxed
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _strict(sub, relaxed)
    return parser


def parse_error(argv: list[str], mention: bool = False) -> str | None:
    """The parser's complaint about ``argv`` (None: it parses). ``mention``: an inline reference, where
    missing arguments are fine but unknown commands, options and values are not."""
    from vpr_ros.cli.main import build_parser

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            _strict(build_parser(), relaxed=mention).parse_args(argv)
        except SystemExit as exc:
            if exc.code:
                last = err.getvalue().strip().splitlines()[-1]
                return None if mention and _MENTION.search(last) else last
    return None


# -- the tests ----------------------------------------------------------------------------------
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    assert broken_links(doc) == []


def test_every_quoted_command_parses() -> None:
    problems, skipped, checked = [], set(), 0
    for doc in DOCS:
        for kind, text in quoted_commands(doc):
            argvs = variants(text, kind)
            if argvs is None or any(s in text for s in SKIPPED):
                skipped.add(text)
                continue
            for argv in argvs:
                checked += 1
                error = parse_error(argv, mention=kind == "inline")
                if error:
                    problems.append(f"{doc.name}: `{text}` -> vpr-ros {' '.join(argv)}: {error}")
    assert checked > 100, checked
    assert problems == [], "\n".join(problems)
    stale = [s for s in SKIPPED if not any(s in t for t in skipped)]
    assert stale == [], f"SKIPPED entries that no longer occur: {stale}"
    unlisted = [t for t in skipped if not any(s in t for s in SKIPPED)]
    assert unlisted == [], f"quoted commands with shell syntax: list them in SKIPPED with a reason: {unlisted}"


def test_the_checker_sees_a_broken_link_a_bad_anchor_and_a_bad_command(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# A title (`x.y`)\n## Reading the output\n")
    doc = tmp_path / "doc.md"
    doc.write_text("[ok](other.md#reading-the-output) [ok2](other.md#a-title-xy) [gone](missing.md)\n"
                   "[bad](other.md#nowhere) [web](https://example.com/x)\n```\n[code](not/a/link)\n```\n")
    assert broken_links(doc) == ["doc.md: missing.md (no such file)",
                                 "doc.md: other.md#nowhere (no heading with that anchor in other.md)"]
    assert variants("vpr-ros eval --dataset DIR [--rerank-k K] [--precision fp32|bf16]", "inline") == [
        ["eval", "--dataset", "DIR"], ["eval", "--dataset", "DIR", "--rerank-k", "5", "--precision", "fp32"],
        ["eval", "--dataset", "DIR", "--rerank-k", "5", "--precision", "bf16"]]
    assert variants("vpr-ros map label MAP --id N --label L | --yaml F", "inline") == [
        ["map", "label", "MAP", "--id", "1", "--label", "L"], ["map", "label", "MAP", "--yaml", "F"]]
    assert variants("vpr-ros map info MAP | head", "code") is None  # a pipe: skipped, and must be listed
    assert parse_error(["eval", "--dataset", "D", "--rerank-k", "0"]) is not None
    assert parse_error(["replay", "BAG", "--no-such-option"]) is not None
    assert parse_error(["map", "query", "MAP", "--text", "room 214"]) is None
    assert parse_error(["replay", "--map-save"], mention=True) is None  # naming an option is fine inline
    assert parse_error(["replay", "--map-safe"], mention=True) is not None  # a misspelt one is not
    assert parse_error(["map", "querry"], mention=True) is not None
    assert parse_error(["eval", "--dataset", "D", "--rerank", "5"]) is not None  # abbreviations: quote in full


def test_eval_help_has_a_description_and_the_defaults(capsys) -> None:
    from vpr_ros.cli.main import build_parser

    with pytest.raises(SystemExit):
        build_parser("eval").parse_args(["eval", "--help"])
    out = capsys.readouterr().out
    assert "recall@N on a VPR-Bench style image set, with and without MNN re-ranking" in out
    assert "ground_truth_new.npy" in out  # the layout the dataset must have
    for default in ("(default: lite0-gem)", "(default: fp32)", "(default: 5)", "(default: 1)"):
        assert default in out, out
    assert "(default: None)" not in out


def test_ros2_parameter_table_has_each_parameter_once() -> None:
    """A leftover second parameter table (26 duplicate rows once) must not come back."""
    from vpr_ros.nodes.settings import all_parameter_specs

    text = (REPO / "docs" / "ros2.md").read_text()
    rows = re.findall(r"^\| `([\w.]+)` \| (?:str|int|float|bool) \|", text, flags=re.M)
    assert sorted(rows) == sorted(s.name for s in all_parameter_specs())


def test_the_output_words_of_the_demo_are_explained_where_a_newcomer_looks() -> None:
    """`MNN 160  cos 0.912` and the metrics lines: a glossary linked from the README's demo section."""
    readme = (REPO / "README.md").read_text()
    assert "docs/replay.md#reading-the-output" in readme.split("## ROS 2 usage")[0]
    section = (REPO / "docs" / "replay.md").read_text().split("## Reading the output", 1)[1].split("\n## ", 1)[0]
    for term in ("`MNN`", "`cos`", "keyframe", "loop closure", "precision", "recall", "F1", "PR AUC",
                 "max recall at 100 % precision", "R@1", "TP / FP", "ATE"):
        assert f"| {term}" in section or f"{term} |" in section or f"| {term} " in section, term
