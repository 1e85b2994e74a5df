"""Official SelaVPR / CricaVPR weights: where they are published, a user cache, download and sha256 checks.

Nothing here runs at import time or in tests against the network. ``download`` is for a machine with
internet (``vpr-ros weights download NAME``); the robot then only reads the cached file. Most authors
publish no checksums, so the sha256 is recorded on first download (trust on first use) in
``<file>.json`` next to the file and verified afterwards; where the source publishes one (SelaVPR++ on
Hugging Face) the file must also match it.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from vpr_ros.core.errors import ConfigError, ModelLoadError

__all__ = ["WeightSource", "SOURCES", "weights_dir", "cached_weights_path", "require_cached_weights",
           "download", "verify", "sha256_file", "record_path", "get_source"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def _drive(file_id: str) -> str:
    # The usercontent endpoint with confirm=t skips the "file too large to scan" page for big files.
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """One released checkpoint."""

    name: str
    preset: str
    filename: str
    #: Tried in order.
    urls: tuple[str, ...]
    #: Human page to fetch it by hand (browser) when the direct URL is refused.
    page: str
    description: str
    #: The name the official source gives the file when it differs from ``filename`` (Hugging Face serves
    #: MegaLoc as ``model.safetensors``): what a user fetching it by hand has; accepted in the cache too.
    served_as: str = ""
    #: SHA-256 and size in bytes the official source publishes (Hugging Face file pages); "" / 0 when none
    #: is published, and then the digest is recorded on first download (trust on first use).
    sha256: str = ""
    size: int = 0

    @property
    def hand_name(self) -> str:
        """The file name a user who downloads it by hand (browser, other machine) will have."""
        return self.served_as or self.filename

    def copy_hint(self, where: Path | str) -> str:
        """How to put a hand-downloaded copy in place, naming the file the user will actually have."""
        also = f" (or as {self.filename})" if self.served_as else ""
        return f"copy {self.hand_name} to {where}{also}"


_SELAPP_GH = "https://github.com/Lu-Feng/SelaVPRplusplus/releases/download/SelaVPR%2B%2B/"
_SELAPP_HF = "https://huggingface.co/fenglu96/SelaVPRplusplus/resolve/main/"
_IMAGE_GH = "https://github.com/Lu-Feng/ImAge/releases/download/v1.0.0/"
_IMAGE_HF = "https://huggingface.co/fenglu96/ImAge4VPR/resolve/main/"


def _successor_sources() -> tuple[WeightSource, ...]:
    """SelaVPR++ (MIT; sizes and SHA-256 from the Hugging Face file pages, MODELS_3.md §1.10) and ImAge
    (MIT; no published digest). Both are full training checkpoints (optimiser state, NumPy recalls)."""
    sela = [("selavprpp", "large", 1_541_378_005,
             "b4b97320e103686872cad73f331661c06a473500ca3b33fcb18cf7f93a57a633", "ViT-L, 4096-d"),
            ("selavprpp-rerank", "large_rerank", 1_605_319_807,
             "b055346fe0ac14e48689502da2c60113c9dd4018c4fb7a10fbd48d1662e69f8a", "ViT-L, 4096-d + 512-bit hash"),
            ("selavprpp-base", "base", 482_674_957,
             "b048490dbd1c27dee67fce6faaec7bec267d19a044c85877af94b8588e596a62", "ViT-B, 2048-d"),
            ("selavprpp-base-rerank", "base_rerank", 513_995_711,
             "da31138202b9a746916588ecd97499a56bae304e61444a50d6f34761377cdcbf", "ViT-B, 2048-d + 512-bit hash")]
    out = [WeightSource(name, name, f"SelaVPRplusplus_{suffix}.pth",
                        (f"{_SELAPP_HF}SelaVPRplusplus_{suffix}.pth", f"{_SELAPP_GH}SelaVPRplusplus_{suffix}.pth"),
                        "https://huggingface.co/fenglu96/SelaVPRplusplus",
                        f"SelaVPR++ {what}, unified dataset (MIT); a training checkpoint",
                        sha256=sha, size=size)
           for name, suffix, size, sha, what in sela]
    for name, stem, what in (("image", "Merged", "unified dataset (hub default)"), ("image-gsv", "GSV", "GSV-Cities")):
        out.append(WeightSource(name, name, f"ImAge_{stem}.pth", (f"{_IMAGE_GH}ImAge_{stem}.pth", f"{_IMAGE_HF}ImAge_{stem}.pth"),
                                "https://github.com/Lu-Feng/ImAge/releases/tag/v1.0.0",
                                f"ImAge 6144-d trained on the {what} (MIT)"))
    return tuple(out)


SOURCES: dict[str, WeightSource] = {
    s.name: s
    for s in (
        WeightSource("selavpr-msls", "selavpr", "SelaVPR_msls.pth",
                     (_drive("1vy05l0JTEgr6n8iSoz_P_yjWfEzFPAkV"),),
                     "https://drive.google.com/file/d/1vy05l0JTEgr6n8iSoz_P_yjWfEzFPAkV/view",
                     "SelaVPR trained on MSLS (README; MSLS-val R@1 90.8)"),
        WeightSource("selavpr-pitts30k", "selavpr", "SelaVPR_pitts30k.pth",
                     (_drive("1LKTZZRHfMH3dY3UPagCt2TIlMN5LguGO"),),
                     "https://drive.google.com/file/d/1LKTZZRHfMH3dY3UPagCt2TIlMN5LguGO/view",
                     "SelaVPR MSLS then fine-tuned on Pitts30k (urban scenes only)"),
        WeightSource("selavpr-reg4-msls", "selavpr-reg4", "SelaVPR_reg4_msls.pth",
                     (_drive("16Qkr6MGe3k0kYtFfw3YLQXZFn4c9YvJk"),),
                     "https://drive.google.com/file/d/16Qkr6MGe3k0kYtFfw3YLQXZFn4c9YvJk/view",
                     "SelaVPR with DINOv2+4 registers, MSLS (no published numbers)"),
        WeightSource("cricavpr", "cricavpr", "CricaVPR.pth",
                     ("https://github.com/Lu-Feng/CricaVPR/releases/download/v1.0/CricaVPR.pth",
                      _drive("171lCcxZFFnvEvo88ntIwELeBegcMTEJs")),
                     "https://github.com/Lu-Feng/CricaVPR/releases/tag/v1.0",
                     "CricaVPR trained on GSV-Cities (one model for all benchmarks)"),
        WeightSource("salad", "salad", "dino_salad.ckpt",
                     ("https://github.com/serizba/salad/releases/download/v1.0.0/dino_salad.ckpt",
                      _drive("1u83Dmqmm1-uikOPr58IIhfIzDYwFxCy1")),
                     "https://github.com/serizba/salad/releases/tag/v1.0.0",
                     "DINOv2 SALAD trained on GSV-Cities (a plain state dict despite .ckpt; code GPL-3.0)"),
        WeightSource("megaloc", "megaloc", "MegaLoc_model.safetensors",
                     ("https://huggingface.co/gberton/MegaLoc/resolve/main/model.safetensors",),
                     "https://huggingface.co/gberton/MegaLoc",
                     "MegaLoc (MIT), current Hugging Face safetensors file, read without pickle",
                     served_as="model.safetensors"),
        WeightSource("megaloc-v1", "megaloc", "megaloc.torch",
                     ("https://github.com/gmberton/MegaLoc/releases/download/v1.0/megaloc.torch",),
                     "https://github.com/gmberton/MegaLoc/releases/tag/v1.0",
                     "MegaLoc's older GitHub release (backbone.model.* keys; mapped on load)"),
        WeightSource("boq-dinov2", "boq", "dinov2_12288.pth",
                     ("https://github.com/amaralibey/Bag-of-Queries/releases/download/v1.0/dinov2_12288.pth",),
                     "https://github.com/amaralibey/Bag-of-Queries/releases/tag/v1.0",
                     "BoQ DINOv2 12288-d trained on GSV-Cities (MIT)"),
        *_successor_sources(),
    )
}


def get_source(name: str) -> WeightSource:
    try:
        return SOURCES[name]
    except KeyError:
        raise ConfigError(f"unknown weights {name!r}; choose one of {', '.join(sorted(SOURCES))}") from None


def weights_dir() -> Path:
    """``<user cache>/weights`` (``vpr_ros.models.cache``: ``$VPR_ROS_CACHE`` or ``~/.cache/vpr_ros``)."""
    from vpr_ros.models.cache import cache_dir

    return cache_dir("weights")


def record_path(path: Path) -> Path:
    """The JSON file that stores the sha256 recorded for ``path``."""
    return path.with_name(path.name + ".json")


def cached_weights_path(name: str) -> Path | None:
    """Path of the cached file for ``name`` (its cache name, else the name its source serves it under),
    or None when it has not been downloaded."""
    src = get_source(name)
    for filename in dict.fromkeys((src.filename, src.hand_name)):
        path = weights_dir() / filename
        if path.is_file():
            return path
    return None


def require_cached_weights(name: str) -> Path:
    """Like :func:`cached_weights_path` but raises a ModelLoadError saying how to get the file."""
    path = cached_weights_path(name)
    if path is None:
        src = get_source(name)
        raise ModelLoadError(
            f"weights {name!r} are not in {weights_dir()}; on a machine with internet run "
            f"`vpr-ros weights download {name}` (or fetch {src.page} in a browser) and "
            f"{src.copy_hint('there')}, or set model.weights to the file")
    return path


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of ``path``; raises ModelLoadError when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(chunk)
    except OSError as exc:
        raise ModelLoadError(f"cannot read weights file {path}: {exc}; check the file or download it "
                             "again") from exc
    return digest.hexdigest()


def _write_record(path: Path, sha: str, url: str) -> None:
    record = {"file": path.name, "sha256": sha, "size": path.stat().st_size, "url": url,
              "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    record_path(path).write_text(json.dumps(record, indent=2) + "\n")


def verify(name: str, path: Path | None = None) -> str:
    """Check the cached file against its recorded sha256 (recording it first if there is none).

    Returns:
        The sha256 hex digest.
    Raises:
        ModelLoadError: file missing or its digest differs from the recorded one.
    """
    path = path or require_cached_weights(name)
    sha = sha256_file(path)
    published = get_source(name).sha256
    if published and sha != published:
        raise ModelLoadError(f"{path} has sha256 {sha} but the official source publishes {published} for "
                             f"{name!r}; the file is damaged or not the released one: delete it and download "
                             "it again")
    rec = record_path(path)
    if not rec.is_file():
        _write_record(path, sha, url="(placed by hand)")
        log.info("recorded sha256 %s for %s", sha, path)
        return sha
    try:
        record = json.loads(rec.read_text())
        expected = record.get("sha256") if isinstance(record, dict) else None
    except (OSError, ValueError) as exc:  # ValueError covers JSONDecodeError and UnicodeDecodeError
        raise ModelLoadError(f"the checksum record {rec} is damaged ({exc}); delete it and run "
                             f"`vpr-ros weights verify {name}` to record the file's sha256 again") from exc
    if not isinstance(expected, str):
        raise ModelLoadError(f"the checksum record {rec} holds no sha256; delete it and run "
                             f"`vpr-ros weights verify {name}` to record the file's sha256 again")
    if sha != expected:
        raise ModelLoadError(f"{path} has sha256 {sha} but {expected} was recorded at download; the file "
                             f"is corrupt or replaced: delete it and {rec.name}, then download again")
    return sha


def download(name: str, url: str | None = None, progress: bool = True, timeout_s: float = 60.0) -> Path:
    """Download ``name`` into :func:`weights_dir` (written atomically; re-run to retry).

    Args:
        url: override the official URL (mirror, or a local server in tests).
    Returns:
        Path of the cached file. An already cached file is verified instead of downloaded again.
    Raises:
        ModelLoadError: no network / HTTP error / a web page instead of the file / checksum mismatch.
    """
    src = get_source(name)
    dest = weights_dir() / src.filename
    cached = cached_weights_path(name)
    if cached is not None:
        verify(name, cached)
        return cached
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    for candidate in ((url,) if url else src.urls):
        try:
            sha = _fetch(candidate, dest, progress, timeout_s)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            errors.append(f"{candidate}: {getattr(exc, 'reason', exc)}")
            continue
        _write_record(dest, sha, candidate)
        log.info("downloaded %s (%s) sha256 %s", dest, name, sha)
        return dest
    raise ModelLoadError(
        f"could not download {name!r} ({'; '.join(errors)}). Without internet: on another machine run "
        f"`vpr-ros weights download {name}` or open {src.page} in a browser, {src.copy_hint(dest.parent)}, "
        f"then run `vpr-ros weights verify {name}`")


def _fetch(url: str, dest: Path, progress: bool, timeout_s: float) -> str:
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "vpr_ros"})
    with urllib.request.urlopen(request, timeout=timeout_s) as resp:
        total = int(resp.headers.get("Content-Length") or 0) or None
        first = resp.read(_CHUNK)
        if resp.headers.get_content_type() == "text/html" or first[:1] == b"<":
            raise ValueError("the server sent a web page instead of the file (Drive quota or sign-in page)")
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, desc=dest.name)
        try:
            with open(part, "wb") as out:
                chunk = first
                while chunk:
                    out.write(chunk)
                    digest.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                    chunk = resp.read(_CHUNK)
        finally:
            if bar is not None:
                bar.close()
    size = part.stat().st_size
    if total is not None and size != total:
        part.unlink()
        raise ValueError(f"truncated download ({size} of {total} bytes)")
    os.replace(part, dest)
    return digest.hexdigest()
