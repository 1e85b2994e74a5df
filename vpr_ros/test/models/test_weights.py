"""Weights cache: download from a local HTTP server, sha256 record and verification, offline messages, CLI."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from vpr_ros.cli import models as models_cli
from vpr_ros.cli import weights as weights_cli
from vpr_ros.core.errors import ConfigError, ModelLoadError
from vpr_ros.models import weights as W

PAYLOAD = b"PK\x03\x04" + bytes(range(256)) * 600  # ~150 kB, starts like a zip (.pth) file


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if self.path == "/CricaVPR.pth":
            body, ctype = PAYLOAD, "application/octet-stream"
        elif self.path == "/quota":
            body, ctype = b"<!DOCTYPE html><html>quota exceeded</html>", "text/html"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(W, "weights_dir", lambda: tmp_path / "weights")
    return tmp_path / "weights"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_records_sha256_and_verify_detects_tampering(server: str, cache: Path) -> None:
    assert W.cached_weights_path("cricavpr") is None
    path = W.download("cricavpr", url=f"{server}/CricaVPR.pth", progress=False, timeout_s=10)
    assert path == cache / "CricaVPR.pth" and path.read_bytes() == PAYLOAD
    record = json.loads(W.record_path(path).read_text())
    assert record["sha256"] == hashlib.sha256(PAYLOAD).hexdigest() and record["size"] == len(PAYLOAD)
    assert W.cached_weights_path("cricavpr") == path
    assert W.verify("cricavpr") == record["sha256"]
    assert W.download("cricavpr", url=f"{server}/missing", progress=False) == path  # cached: no fetch
    path.write_bytes(PAYLOAD[:-1] + b"x")
    with pytest.raises(ModelLoadError, match="corrupt or replaced"):
        W.verify("cricavpr")


def test_web_page_404_and_offline_give_actionable_errors(server: str, cache: Path) -> None:
    with pytest.raises(ModelLoadError, match="web page instead of the file"):
        W.download("selavpr-msls", url=f"{server}/quota", progress=False, timeout_s=10)
    with pytest.raises(ModelLoadError, match="Not Found"):
        W.download("selavpr-msls", url=f"{server}/nothing", progress=False, timeout_s=10)
    with pytest.raises(ModelLoadError, match=r"Without internet.*vpr-ros weights download selavpr-msls"):
        W.download("selavpr-msls", url=f"http://127.0.0.1:{_closed_port()}/x", progress=False, timeout_s=5)
    assert not list(cache.glob("*.pth*")), "failed downloads must leave nothing behind"


def test_missing_weights_and_unknown_names(cache: Path) -> None:
    with pytest.raises(ModelLoadError, match="vpr-ros weights download selavpr-reg4-msls"):
        W.require_cached_weights("selavpr-reg4-msls")
    with pytest.raises(ConfigError, match="choose one of"):
        W.cached_weights_path("netvlad")


def test_hand_placed_file_is_recorded_on_first_verify(cache: Path) -> None:
    cache.mkdir(parents=True)
    (cache / "SelaVPR_msls.pth").write_bytes(PAYLOAD)
    assert W.verify("selavpr-msls") == hashlib.sha256(PAYLOAD).hexdigest()
    assert W.record_path(cache / "SelaVPR_msls.pth").is_file()


def test_official_sources_cover_the_registry_presets() -> None:
    from vpr_ros.models.registry import PRESETS

    for spec in PRESETS.values():
        kind, _, name = spec.weights_source.partition(":")
        if kind == "download":
            assert W.get_source(name).preset == spec.name
    assert "releases/download/v1.0/CricaVPR.pth" in W.SOURCES["cricavpr"].urls[0]
    assert "1vy05l0JTEgr6n8iSoz_P_yjWfEzFPAkV" in W.SOURCES["selavpr-msls"].urls[0]


def test_transport_and_query_presets_are_listed_with_their_sources(cache: Path, capsys) -> None:
    assert W.SOURCES["salad"].urls[0].endswith("serizba/salad/releases/download/v1.0.0/dino_salad.ckpt")
    assert W.SOURCES["megaloc"].urls[0] == "https://huggingface.co/gberton/MegaLoc/resolve/main/model.safetensors"
    assert W.SOURCES["megaloc-v1"].preset == "megaloc"
    assert W.SOURCES["boq-dinov2"].urls[0].endswith("Bag-of-Queries/releases/download/v1.0/dinov2_12288.pth")
    args = _cli(weights_cli, ["weights", "list"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    for name, preset in (("salad", "salad"), ("megaloc", "megaloc"), ("megaloc-v1", "megaloc"),
                         ("boq-dinov2", "boq")):
        assert f"{name:18s} preset={preset:13s} not downloaded" in out
    cache.mkdir(parents=True)
    (cache / "dinov2_12288.pth").write_bytes(PAYLOAD)
    args = _cli(models_cli, ["models"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "global 8448-d, local 23x23x768, input 322x322" in out
    assert "global 12288-d, local 23x23x768, input 322x322" in out
    assert "missing: vpr-ros weights download salad" in out and "missing: vpr-ros weights download megaloc" in out
    assert f"weights download:boq-dinov2: available ({cache / 'dinov2_12288.pth'})" in out


def _cli(module: object, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_parser(parser.add_subparsers(dest="command"))  # type: ignore[attr-defined]
    return parser.parse_args(argv)


def test_cli_weights_and_models(server: str, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _cli(weights_cli, ["weights", "verify", "cricavpr"])
    assert args.func(args) == 1  # named and missing
    args = _cli(weights_cli, ["weights", "download", "cricavpr", "--url", f"{server}/CricaVPR.pth", "--no-progress"])
    assert args.func(args) == 0
    args = _cli(weights_cli, ["weights", "list"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"cached at {cache / 'CricaVPR.pth'}" in out and "selavpr-msls" in out
    args = _cli(models_cli, ["models"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "cricavpr" in out and "global 10752-d, local 16x16x768" in out and "available" in out
    assert "missing: vpr-ros weights download selavpr-msls" in out


def _served_name(src: W.WeightSource) -> str:
    """The name the official source gives the file: the last part of a direct (non-Drive) URL; Drive
    pages give no name in the URL, so the README's name (the registry's filename) stands."""
    direct = [u for u in src.urls if "drive.usercontent.google.com" not in u]
    return direct[0].rsplit("/", 1)[-1] if direct else src.filename


@pytest.mark.parametrize("name", sorted(W.SOURCES))
def test_offline_messages_name_the_file_the_user_will_have_and_it_is_accepted(name: str, cache: Path) -> None:
    """Issue 19: offline, `weights download megaloc` said to copy MegaLoc_model.safetensors while Hugging
    Face serves model.safetensors. Every preset: the message names the served file, and that file works."""
    served = _served_name(W.SOURCES[name])
    with pytest.raises(ModelLoadError) as missing:
        W.require_cached_weights(name)
    assert f"copy {served} " in str(missing.value), missing.value
    with pytest.raises(ModelLoadError) as offline:
        W.download(name, url=f"http://127.0.0.1:{_closed_port()}/x", progress=False, timeout_s=5)
    assert f"copy {served} to {cache}" in str(offline.value), offline.value
    cache.mkdir(parents=True, exist_ok=True)
    (cache / served).write_bytes(PAYLOAD)  # what the user copied, under the name they have
    assert W.cached_weights_path(name) == cache / served
    if W.SOURCES[name].sha256:  # a digest is published (SelaVPR++): this stand-in is refused by it
        with pytest.raises(ModelLoadError, match="official source publishes"):
            W.verify(name)
        return
    assert W.verify(name) == hashlib.sha256(PAYLOAD).hexdigest()
    assert W.download(name, url=f"http://127.0.0.1:{_closed_port()}/x", progress=False) == cache / served


def test_megaloc_is_found_under_both_names_and_the_cli_verifies_the_served_one(cache: Path, capsys) -> None:
    assert W.SOURCES["megaloc"].hand_name == "model.safetensors"
    cache.mkdir(parents=True)
    (cache / "model.safetensors").write_bytes(PAYLOAD)
    args = _cli(weights_cli, ["weights", "verify", "megaloc"])
    assert args.func(args) == 0 and f"megaloc: OK sha256 {hashlib.sha256(PAYLOAD).hexdigest()}" in capsys.readouterr().out
    args = _cli(models_cli, ["models"])
    assert args.func(args) == 0
    assert f"weights download:megaloc: available ({cache / 'model.safetensors'})" in capsys.readouterr().out
    (cache / "MegaLoc_model.safetensors").write_bytes(PAYLOAD)  # what `weights download` writes: preferred
    assert W.cached_weights_path("megaloc") == cache / "MegaLoc_model.safetensors"
