#!/usr/bin/env python3
"""The classical OpenCV restoration pipeline RestoreClick's engine is measured against.

The shop's quality benchmark runs this tuned baseline and the embedded
restoration engine on the same aged photos in the same run, and compares
their PSNR/SSIM and milliseconds per megapixel. The pipeline is the one the
product's owner specified; every parameter below is theirs:

  1. Grey-world white balance: each channel scaled so its mean equals the mean
     of the three channel means (float32, clipped to 0..255).
  2. Per-channel percentile stretch: the 0.5th percentile maps to 0 and the
     99.5th to 255, linearly, clipped (a flat channel is left as it is).
     Steps 1-2 stay in float32; the result is rounded to uint8 once.
  3. Scratch and dust mask: |gray - medianBlur(gray, 5)| > 40, dilated with a
     3x3 kernel for one iteration, then cv2.inpaint with inpaintRadius=3 and
     cv2.INPAINT_TELEA (Telea's fast-marching method).
  4. Denoise: cv2.fastNlMeansDenoisingColored with h=10, hColor=10,
     templateWindowSize=7, searchWindowSize=21 (non-local means).
  5. Unsharp mask: GaussianBlur with ksize=(0, 0), sigmaX=1.0, then
     addWeighted(img, 1.3, blur, -0.3, 0), saturating to uint8.

Usage: python3 scripts/opencv_baseline.py IN_DIR OUT_DIR [--threads N]

Restores every *.png in IN_DIR (sorted by name) into OUT_DIR/<same name> as an
8-bit RGB PNG of the same size, and prints one JSON object on stdout:
  {"opencv": VERSION, "threads": N,
   "photos": [{"name": ..., "width": W, "height": H, "seconds": S}]}
where S is time.perf_counter() around restore() alone, without file I/O
(after one untimed warm-up run on a small image).
OpenCV runs single-threaded unless --threads says otherwise (default 1).
Dependencies: scripts/opencv-setup.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path


def parse_args():
    parser = argparse.ArgumentParser(
        description="Restore IN_DIR/*.png with the OpenCV baseline pipeline into OUT_DIR."
    )
    parser.add_argument("in_dir", type=Path, metavar="IN_DIR")
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="OpenCV (and BLAS/OpenMP) threads; default 1")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


ARGS = parse_args()
# Thread limits must be in the environment before numpy and cv2 load.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

try:
    import cv2
    import numpy as np
except ImportError as err:
    sys.exit(f"opencv_baseline: {err}; run scripts/opencv-setup")


def restore(bgr):
    """Restores one aged 8-bit BGR photo; returns a uint8 BGR array of the same shape."""
    # 1. Grey-world white balance.
    img = bgr.astype(np.float32)
    means = img.reshape(-1, 3).mean(axis=0)
    img = np.clip(img * (means.mean() / np.maximum(means, 1e-6)), 0, 255)

    # 2. Per-channel 0.5th/99.5th percentile stretch.
    for c in range(3):
        lo, hi = np.percentile(img[..., c], (0.5, 99.5))
        if hi - lo > 1e-6:
            img[..., c] = np.clip((img[..., c] - lo) * (255.0 / (hi - lo)), 0, 255)
    img = np.rint(img).astype(np.uint8)

    # 3. Scratches and dust: pixels far from their 5x5 median, dilated, inpainted.
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    med = cv2.medianBlur(gray, 5)
    mask = np.where(cv2.absdiff(gray, med) > 40, 255, 0).astype(np.uint8)
    mask = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=1)
    img = cv2.inpaint(img, mask, inpaintRadius=3, flags=cv2.INPAINT_TELEA)

    # 4. Non-local means denoising.
    img = cv2.fastNlMeansDenoisingColored(img, None, h=10, hColor=10,
                                          templateWindowSize=7, searchWindowSize=21)

    # 5. Unsharp mask.
    blur = cv2.GaussianBlur(img, (0, 0), sigmaX=1.0)
    return cv2.addWeighted(img, 1.3, blur, -0.3, 0)


def main():
    cv2.setNumThreads(ARGS.threads)
    in_dir, out_dir = ARGS.in_dir, ARGS.out_dir
    if not in_dir.is_dir():
        sys.exit(f"opencv_baseline: {in_dir} is not a directory")
    inputs = sorted(in_dir.glob("*.png"), key=lambda p: p.name)
    if not inputs:
        sys.exit(f"opencv_baseline: no *.png in {in_dir}")
    if out_dir.resolve() == in_dir.resolve():
        sys.exit("opencv_baseline: OUT_DIR must differ from IN_DIR")
    out_dir.mkdir(parents=True, exist_ok=True)

    # One untimed run first: OpenCV's one-time set-up is not the pipeline's cost.
    restore(np.full((64, 64, 3), 128, dtype=np.uint8))

    photos = []
    for path in inputs:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)  # 8-bit, 3 channels, BGR
        if bgr is None:
            sys.exit(f"opencv_baseline: cannot read {path}")
        started = time.perf_counter()
        restored = restore(bgr)
        seconds = time.perf_counter() - started
        # imwrite takes BGR and stores the PNG as RGB.
        if not cv2.imwrite(str(out_dir / path.name), restored):
            sys.exit(f"opencv_baseline: cannot write {out_dir / path.name}")
        height, width = bgr.shape[:2]
        photos.append({"name": path.name, "width": width, "height": height,
                       "seconds": round(seconds, 6)})

    print(json.dumps({"opencv": cv2.__version__, "threads": ARGS.threads, "photos": photos}))


if __name__ == "__main__":
    try:
        main()
    except cv2.error as err:
        sys.exit(f"opencv_baseline: OpenCV error: {err}")
