"""Official sources of the SelaVPR++ and ImAge files: URLs, published digests, and the CLI listing them."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
from pathlib import Path

import pytest

from vpr_ros.cli import weights as weights_cli
from vpr_ros.core.errors import ModelLoadError
from vpr_ros.models import weights as W

GH = "https://github.com/Lu-Feng/SelaVPRplusplus/releases/download/SelaVPR%2B%2B/"
PAYLOAD = b"PK\x03\x04" + bytes(range(256)) * 64
SELA = {"selavprpp": "large", "selavprpp-rerank": "large_rerank", "selavprpp-base": "base",
        "selavprpp-base-rerank": "base_rerank"}


def test_sources_name_the_official_files_with_their_published_digests() -> None:
    for name, suffix in SELA.items():
        src = W.SOURCES[name]
        assert src.preset == name and src.filename == f"SelaVPRplusplus_{suffix}.pth"
        assert src.urls == (f"https://huggingface.co/fenglu96/SelaVPRplusplus/resolve/main/{src.filename}", GH + src.filename)
        assert len(src.sha256) == 64 and int(src.sha256, 16) and src.size > 4e8
    large = W.SOURCES["selavprpp-rerank"]
    assert large.sha256.startswith("b055346f") and large.size == 1_605_319_807
    for name, stem in (("image", "Merged"), ("image-gsv", "GSV")):
        src = W.SOURCES[name]
        assert src.urls[0] == f"https://github.com/Lu-Feng/ImAge/releases/download/v1.0.0/ImAge_{stem}.pth"
        assert src.urls[1] == f"https://huggingface.co/fenglu96/ImAge4VPR/resolve/main/ImAge_{stem}.pth"
        assert src.sha256 == ""  # none published: recorded on first use


def test_a_published_digest_is_enforced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(W, "weights_dir", lambda: tmp_path)
    good = hashlib.sha256(PAYLOAD).hexdigest()
    monkeypatch.setitem(W.SOURCES, "selavprpp-base", dataclasses.replace(W.SOURCES["selavprpp-base"], sha256=good))
    (tmp_path / "SelaVPRplusplus_base.pth").write_bytes(PAYLOAD)
    assert W.verify("selavprpp-base") == good
    (tmp_path / "SelaVPRplusplus_base.pth").write_bytes(PAYLOAD + b"x")
    with pytest.raises(ModelLoadError, match=f"official source publishes {good}.*download it again"):
        W.verify("selavprpp-base")
    parser = argparse.ArgumentParser()
    weights_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["weights", "list", "image", "selavprpp-rerank"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"{'image':18s} preset={'image':13s} not downloaded" in out
    assert "selavprpp-rerank" in out and "huggingface.co/fenglu96/SelaVPRplusplus" in out
