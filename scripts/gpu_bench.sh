#!/usr/bin/env bash
# The CUDA / TensorRT figures of docs/benchmarks.md in one run on a machine with an NVIDIA GPU.
#
#   scripts/gpu_bench.sh [OUT_DIR] [WEIGHTS]
#
# 1. builds the SelaVPR TensorRT fp16 engine (our ONNX export; cached, minutes the first time) and
#    times it against torch eager on CUDA (fp32 and fp16) and the CPU ONNX Runtime path, batch 1,
#    the same Corridor frame; cosine of each output with CUDA fp32 eager;
# 1b. the same for SelaVPR++ (ViT-B and ViT-L -rerank, hash included) and ImAge, random weights;
# 2. `vpr-ros bench verify` (exact MNN, K=20 at 61x61x128) on that machine's CPU;
# 3. `vpr-ros bench pipeline --stages` with the lite0-gem default.
# Everything goes to OUT_DIR (default out/gpu_bench_<date>): JSON per step, log, nvidia-smi, versions.
# WEIGHTS: the SelaVPR checkpoint; without it one random initialisation is used (speed only; the
# cosines then measure numerical drift, not recall). Not runnable without CUDA: it stops at step 0.
set -euo pipefail

OUT=${1:-out/gpu_bench_$(date -u +%Y%m%dT%H%M%SZ)}
WEIGHTS=${2:-}
VENV=${VPR_ROS_VENV:-.venv}
PY="$VENV/bin/python"
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1

echo "== 0. machine"
command -v nvidia-smi >/dev/null || { echo "no nvidia-smi: this script needs an NVIDIA GPU"; exit 2; }
nvidia-smi | tee "$OUT/nvidia-smi.txt"
"$PY" - <<'EOF' | tee "$OUT/versions.txt"
import importlib, platform
import torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
if not torch.cuda.is_available():
    raise SystemExit("torch sees no CUDA device; install a CUDA build of torch (requirements/) first")
print("gpu", torch.cuda.get_device_name(0))
for name in ("tensorrt", "torch_tensorrt", "onnxruntime", "onnx", "faiss", "cv2"):
    try:
        print(name, importlib.import_module(name).__version__)
    except ImportError:
        print(name, "not installed")
EOF
git rev-parse HEAD > "$OUT/commit.txt" 2>/dev/null || true

echo "== 1. SelaVPR: TensorRT fp16 engine vs torch CUDA vs ONNX Runtime CPU"
OUT="$OUT" WEIGHTS="$WEIGHTS" "$PY" - <<'EOF'
import json, os, statistics, tempfile, time
from pathlib import Path

import numpy as np
import torch

from vpr_ros.cli.demo import corridor_frames
from vpr_ros.models import load_model

out, weights = Path(os.environ["OUT"]), os.environ["WEIGHTS"] or None
preset = "selavpr"
if weights is None:  # one random initialisation, saved once, loaded by every backend
    weights = str(Path(tempfile.mkdtemp()) / "selavpr_random.pth")
    torch.save(load_model(preset, pretrained=False).module.state_dict(), weights)
frame = corridor_frames("query", 1)
variants = {
    "cuda_fp32_eager": dict(backend="torch", device="cuda", precision="fp32"),
    "cuda_fp16_eager": dict(backend="torch", device="cuda", precision="fp16"),
    "tensorrt_fp16": dict(backend="tensorrt", device="cuda", precision="fp16"),
    "cpu_ort_fp32_1thread": dict(backend="onnxruntime", device="cpu", precision="fp32", threads=1),
}
rows, ref = {}, None
for name, kw in variants.items():
    t0 = time.perf_counter()
    try:
        model = load_model(preset, weights, **kw)
    except Exception as exc:  # report every variant; one missing backend must not hide the others
        rows[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"{name:<22} unavailable: {exc}")
        continue
    load_s = time.perf_counter() - t0
    x = model.preprocess(frame).numpy()
    for _ in range(3):
        model.runner.run(x)
    times = []
    for _ in range(20 if kw["device"] == "cuda" else 3):
        if kw["device"] == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        g, loc = model.runner.run(x)
        if kw["device"] == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    d = model.extract(frame)
    if ref is None:
        ref = d
    cos_g = float(np.sum(ref.global_[0] * d.global_[0]))
    cos_l = float(np.mean(np.sum(ref.local[0] * d.local[0], axis=-1))) if d.local is not None else None
    rows[name] = {"ms_median": statistics.median(times), "ms_p95": float(np.percentile(times, 95)),
                  "ms_std": statistics.pstdev(times), "load_s": load_s, "cos_global": cos_g, "cos_local": cos_l}
    print(f"{name:<22} {rows[name]['ms_median']:8.2f} ms (p95 {rows[name]['ms_p95']:.2f}), load {load_s:.1f} s, "
          f"cos global {cos_g:.5f} local {cos_l}")
(out / "selavpr_backends.json").write_text(json.dumps({"preset": preset, "weights": os.environ["WEIGHTS"] or "random init",
                                                       "gpu": torch.cuda.get_device_name(0), "rows": rows}, indent=2))
EOF

echo "== 1b. SelaVPR++ (ViT-B and ViT-L, with the hash) and ImAge: TensorRT fp16 vs torch CUDA vs ONNX Runtime CPU"
# Random weights (one initialisation per preset, saved once): speed and numerical drift, not recall.
# For the -rerank presets the torch rows time the one-pass forward with the hash side stream; the
# TensorRT engine holds the float branch only (its graph has the global and local outputs), so its
# row adds the hash computed by the torch module on CUDA, and the bits are compared with fp32 eager.
OUT="$OUT" "$PY" - <<'EOF2'
import json, os, statistics, tempfile, time
from pathlib import Path

import numpy as np
import torch

from vpr_ros.cli.demo import corridor_frames
from vpr_ros.models import load_model

out = Path(os.environ["OUT"])
frame = corridor_frames("query", 1)
variants = {
    "cuda_fp32_eager": dict(backend="torch", device="cuda", precision="fp32"),
    "cuda_fp16_eager": dict(backend="torch", device="cuda", precision="fp16"),
    "tensorrt_fp16": dict(backend="tensorrt", device="cuda", precision="fp16"),
    "cpu_ort_fp32_1thread": dict(backend="onnxruntime", device="cpu", precision="fp32", threads=1),
}
report = {"gpu": torch.cuda.get_device_name(0), "weights": "random init", "presets": {}}
for preset in ("selavprpp-base-rerank", "selavprpp-rerank", "image"):
    weights = str(Path(tempfile.mkdtemp()) / f"{preset}_random.pth")
    torch.save(load_model(preset, pretrained=False).module.state_dict(), weights)
    rows, ref = {}, None
    for name, kw in variants.items():
        t0 = time.perf_counter()
        try:
            model = load_model(preset, weights, **kw)
        except Exception as exc:  # report every variant; one missing backend must not hide the others
            rows[name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"{preset:<22} {name:<22} unavailable: {exc}")
            continue
        load_s = time.perf_counter() - t0
        model.extract(frame)
        times = []
        for _ in range(20 if kw["device"] == "cuda" else 3):
            if kw["device"] == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            d = model.extract(frame)  # preprocessing, forward (and hash) as the node runs it
            if kw["device"] == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t) * 1e3)
        if ref is None:
            ref = d
        row = {"ms_median": statistics.median(times), "ms_p95": float(np.percentile(times, 95)), "load_s": load_s,
               "cos_global": float(np.sum(ref.global_[0] * d.global_[0]))}
        if d.hash is not None:
            row["hash_bits_differing"] = int(np.unpackbits(ref.hash ^ d.hash).sum())
        rows[name] = row
        print(f"{preset:<22} {name:<22} {row['ms_median']:8.2f} ms (p95 {row['ms_p95']:.2f}), load {load_s:.1f} s, "
              f"cos global {row['cos_global']:.5f}, hash bits differing {row.get('hash_bits_differing', '-')}")
    report["presets"][preset] = rows
(out / "successor_backends.json").write_text(json.dumps(report, indent=2))
EOF2

echo "== 2. exact MNN (CPU of this machine)"
"$VENV/bin/vpr-ros" bench verify --json "$OUT/verify.json"

echo "== 3. per-stage cost of one frame (lite0-gem default, CPU)"
OMP_WAIT_POLICY=PASSIVE "$VENV/bin/vpr-ros" bench pipeline --stages --json "$OUT/stages.json"

echo "done: $OUT"
