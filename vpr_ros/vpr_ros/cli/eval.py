"""``vpr-ros eval``: retrieval recall@N on a VPR-Bench style image set, with and without MNN re-ranking.

Layout (VPR-Bench): ``DATASET/query/*.jpg|png``, ``DATASET/ref/*``, ``DATASET/ground_truth_new.npy``
(array of ``[query_idx, [ref_idx, ...]]``). Images are sorted by file name. Gardens Point,
Nordland, St Lucia, Pitts30k and the other VPR-Bench sets use this layout.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2
import numpy as np

from vpr_ros.cli.arg_types import positive_int
from vpr_ros.core.errors import InputError
from vpr_ros.core.eval.groundtruth import load_vprbench_gt
from vpr_ros.core.eval.metrics import recall_at_n
from vpr_ros.core.index import KeyframeIndex
from vpr_ros.core.matching.verification import mnn_count
from vpr_ros.io.output_checks import check_output_dir

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm")
N_VALUES = (1, 5, 10)


def image_paths(folder: Path) -> list[Path]:
    """Sorted image files of ``folder``; InputError when there are none."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not paths:
        raise InputError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); point --dataset "
                         "at a folder with query/ and ref/ sub-folders")
    return paths


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"cannot decode image {path}; remove or replace the file")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def extract_folder(model, paths: list[Path], batch: int = 8):
    """(N, D) globals and (N, h, w, c) locals (or None) of the images at ``paths``."""
    globals_, locals_ = [], []
    for start in range(0, len(paths), batch):
        desc = model.extract([read_rgb(p) for p in paths[start:start + batch]])
        globals_.append(desc.global_)
        if desc.local is not None:
            locals_.append(desc.local)
    return np.concatenate(globals_), (np.concatenate(locals_) if locals_ else None)


def rerank(local_q: np.ndarray, local_db: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Re-order each query's (K,) candidate row by descending MNN count (stable on ties)."""
    out = np.empty_like(candidates)
    for qi, row in enumerate(candidates):
        scores = np.array([mnn_count(local_q[qi], local_db[c]) for c in row])
        out[qi] = row[np.argsort(-scores, kind="stable")]
    return out


def evaluate(model, dataset: Path, rerank_k: int) -> dict:
    """Recall@{1,5,10} of global retrieval and of MNN re-ranking of the top ``rerank_k``."""
    query_paths, ref_paths = image_paths(dataset / "query"), image_paths(dataset / "ref")
    gt = load_vprbench_gt(dataset / "ground_truth_new.npy")
    gq, lq = extract_folder(model, query_paths)
    gdb, ldb = extract_folder(model, ref_paths)
    index = KeyframeIndex(gdb.shape[1])
    index.add(np.arange(len(gdb)), gdb)
    k = max(rerank_k, max(N_VALUES))
    ranked = [index.search(q, k)[0] for q in gq]
    queries = [q for q in range(len(gq)) if gt.get(q)]

    def recalls(rows: list[np.ndarray]) -> dict[str, float]:
        correct = [[int(c) in gt[q] for c in rows[q]] for q in queries]
        return {f"R@{n}": r for n, r in recall_at_n(correct, N_VALUES).items()}

    result = {"model": model.model_id, "queries": len(queries), "database": len(gdb),
              "global": recalls(ranked)}
    if lq is not None:
        reranked = [np.concatenate([rerank(lq[q:q + 1], ldb, row[None, :rerank_k])[0], row[rerank_k:]])
                    for q, row in enumerate(ranked)]
        result["rerank_k"] = rerank_k
        result["mnn_rerank"] = recalls(reranked)
    return result


class _DefaultsShown(argparse.RawDescriptionHelpFormatter):
    """Every option's default in --help, unless it is required, None or already said in its help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required or action.default in (None, argparse.SUPPRESS) or "default" in text:
            return text
        return text + " (default: %(default)s)"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="recall@N on a VPR-Bench style image set",
                                   description=__doc__.replace("``", "'"),  # what it does and the layout
                                   formatter_class=_DefaultsShown)
    parser.add_argument("--dataset", type=Path, required=True,
                        help="folder with query/, ref/ and ground_truth_new.npy (read without "
                             "executing code: only numpy arrays, integers and lists are accepted "
                             "from its pickle)")
    parser.add_argument("--preset", default="lite0-gem", help="model preset (vpr-ros models)")
    parser.add_argument("--weights", default=None, help="weights file (default: the preset's)")
    parser.add_argument("--backend", default=None, help="torch | onnxruntime | tensorrt (default: the preset's)")
    parser.add_argument("--precision", default="fp32",
                        help="fp32 | bf16 (torch) | int8 (onnxruntime) | fp16 (CUDA)")
    parser.add_argument("--threads", type=positive_int, default=1, help="model threads (CPU)")
    parser.add_argument("--rerank-k", type=positive_int, default=5, help="candidates re-ranked by MNN")
    parser.add_argument("--out", type=Path, default=None, help="write eval.json into this directory "
                                                                "(default: print only)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # every input and output is checked before the model loads and the images are embedded
    image_paths(args.dataset / "query"), image_paths(args.dataset / "ref")
    load_vprbench_gt(args.dataset / "ground_truth_new.npy")
    if args.out:
        check_output_dir(args.out)
    from vpr_ros.models import load_model  # heavy (torch): only once the inputs are known good
    from vpr_ros.models.registry import get_preset

    backend = args.backend or get_preset(args.preset).default_backend
    model = load_model(args.preset, args.weights, backend=backend, precision=args.precision,
                       threads=args.threads)
    result = evaluate(model, args.dataset, args.rerank_k)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "eval.json").write_text(json.dumps(result, indent=2))
    return 0
