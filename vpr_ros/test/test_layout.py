"""The layout of vpr_ros/vpr_ros (docs/architecture.md): no import cycles, dependencies one way,
a small core top level with one subpackage per concern, and no source file over 300 code lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from layout_graph import PACKAGE_ROOT, code_lines, cycles, import_graph

REPO = PACKAGE_ROOT.parents[1]
CORE = PACKAGE_ROOT / "core"
SUBPACKAGES = {"config", "matching", "geometry", "map", "fleet", "text", "eval", "localization"}
MAX_CODE_LINES = 300

# importer prefix -> prefixes it must not import (the one-way rules of docs/architecture.md)
FORBIDDEN = {
    "vpr_ros.core": ["vpr_ros.models", "vpr_ros.nodes", "vpr_ros.cli", "vpr_ros.io", "vpr_ros.netns",
                     "vpr_ros.launch_args"],
    "vpr_ros.models": ["vpr_ros.nodes", "vpr_ros.cli"],
    "vpr_ros.io": ["vpr_ros.nodes", "vpr_ros.cli", "vpr_ros.models"],
    "vpr_ros.nodes": ["vpr_ros.cli"],
    "vpr_ros.core.matching": ["vpr_ros.core.geometry", "vpr_ros.core.map", "vpr_ros.core.text",
                              "vpr_ros.core.fleet", "vpr_ros.core.detector", "vpr_ros.core.pipeline"],
    "vpr_ros.core.geometry": ["vpr_ros.core.map", "vpr_ros.core.text", "vpr_ros.core.fleet",
                              "vpr_ros.core.detector", "vpr_ros.core.pipeline"],
    "vpr_ros.core.text": ["vpr_ros.core.map", "vpr_ros.core.geometry", "vpr_ros.core.matching",
                          "vpr_ros.core.fleet", "vpr_ros.core.detector", "vpr_ros.core.pipeline"],
    "vpr_ros.core.map": ["vpr_ros.core.detector", "vpr_ros.core.pipeline", "vpr_ros.core.fleet",
                         "vpr_ros.core.matching"],
    "vpr_ros.core.fleet": ["vpr_ros.core.map", "vpr_ros.core.detector", "vpr_ros.core.pipeline"],
    "vpr_ros.core.eval": ["vpr_ros.core.detector", "vpr_ros.core.map", "vpr_ros.core.pipeline"],
    "vpr_ros.core.config": ["vpr_ros.core.detector", "vpr_ros.core.map", "vpr_ros.core.matching",
                            "vpr_ros.core.geometry", "vpr_ros.core.text", "vpr_ros.core.fleet"],
    "vpr_ros.core.localization": ["vpr_ros.core.pipeline", "vpr_ros.core.fleet", "vpr_ros.core.text",
                                  "vpr_ros.core.eval", "vpr_ros.core.matching", "vpr_ros.core.index"],
}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for importer, targets in graph.items():
        for prefix, banned in FORBIDDEN.items():
            if not _under(importer, prefix):
                continue
            for target in targets:
                if any(_under(target, b) for b in banned) and not _under(target, prefix):
                    found.append(f"{importer} imports {target}")
    return sorted(set(found))


def test_no_import_cycle_in_vpr_ros():
    graph = import_graph()
    assert len(graph) > 100 and any(graph.values())
    assert cycles(graph) == []


def test_the_cycle_finder_sees_a_cycle_through_a_deferred_import(tmp_path):
    pkg = tmp_path / "vpr_ros"
    (pkg / "core").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("from vpr_ros.core.b import X\n")
    (pkg / "core" / "b.py").write_text("X = 1\n\ndef f():\n    from vpr_ros.core import c\n")
    (pkg / "core" / "c.py").write_text("import vpr_ros.core.a\n")
    assert cycles(import_graph(pkg)) == [["vpr_ros.core.a", "vpr_ros.core.b", "vpr_ros.core.c"]]
    (pkg / "core" / "c.py").write_text("")
    assert cycles(import_graph(pkg)) == []


def test_dependencies_point_one_way():
    assert violations(import_graph()) == []


def test_the_rules_see_a_forbidden_import():
    graph = {"vpr_ros.core.geometry.camera": {"vpr_ros.core.map.snapshot"},
             "vpr_ros.core.map.snapshot": {"vpr_ros.core.detector"},
             "vpr_ros.core.index": {"vpr_ros.models.model"},
             "vpr_ros.core.map.live_map": {"vpr_ros.core.map.rows", "vpr_ros.core.text.place_text"}}
    assert violations(graph) == ["vpr_ros.core.geometry.camera imports vpr_ros.core.map.snapshot",
                                 "vpr_ros.core.index imports vpr_ros.models.model",
                                 "vpr_ros.core.map.snapshot imports vpr_ros.core.detector"]


def test_core_top_level_is_the_spine_and_one_subpackage_per_concern():
    top = sorted(p.stem for p in CORE.glob("*.py") if p.name != "__init__.py")
    assert len(top) <= 12, top
    packages = {p.name for p in CORE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == SUBPACKAGES
    assert not any(p.is_dir() and not (p / "__init__.py").exists() and p.name != "__pycache__"
                   for p in CORE.iterdir())


@pytest.mark.parametrize("package", sorted(SUBPACKAGES) + ["."])
def test_each_core_package_says_what_it_holds_and_may_import(package):
    import ast

    init = CORE / package / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    assert len(doc.split()) >= 20 and "import" in doc.lower(), f"{init}: say what it holds and what it may import"


def _sources() -> list[Path]:
    roots = [PACKAGE_ROOT, REPO / "vpr_ros" / "test", REPO / "scripts", REPO / "vpr_ros" / "launch"]
    return sorted(p for root in roots for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_source_file_over_300_code_lines():
    files = _sources()
    assert len(files) > 250
    long = {str(p.relative_to(REPO)): n for p in files if (n := code_lines(p)) > MAX_CODE_LINES}
    assert long == {}


def test_code_lines_skip_docstrings_comments_and_blank_lines(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('"""Module\n\ndoc."""\n\n# a comment\nx = (1,\n     2)  # trailing\n\n\ndef g():\n'
                 '    """Doc."""\n    s = """not a\n    docstring"""\n    return s\n')
    assert code_lines(f) == 6
