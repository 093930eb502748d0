"""Re-quantize a bundle's CLIP int8 encoders from its fp32 ones with the current recipe.

Bundles exported before the CLIP recipe moved to uint8 weights (u8 x u8 kernels, exact on every
CPU) carry int8 weights whose u8 x s8 kernels saturate on x86 without VNNI. This rewrites
``clip-{image,text}.int8.onnx`` from the bundle's fp32 files (which are torch-exact: see the
manifest's ``clip.verify``), checks each against its fp32 file (cosine on random-normal and
structured images, and on prompts), and updates the file hashes, the quantization section and
the int8 verify rows of ``bundle.json``. The text graph keeps whatever vocabulary pruning the
fp32 file has (quantization touches MatMul/Gemm only).

Usage: python scripts/requantize_clip.py BUNDLE_DIR
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    args = ap.parse_args(argv)

    from edge.bundle import read_manifest
    from edge.clip import ClipEncoder, ClipPreprocess
    from edge.session import create_session
    from export.clip import (
        QUANT_OPS_BY_TOWER,
        _cosines,
        _verify_images,
        clip_file,
        quantization_section,
        quantize,
    )
    from export.fastsam import file_entry, write_manifest

    bundle = args.bundle
    manifest = read_manifest(bundle)
    section = dict(manifest.extra.get("clip") or {})
    if "int8" not in section.get("precisions", []):
        raise SystemExit(f"{bundle}: no CLIP int8 encoders to re-quantize")
    enc = ClipEncoder.from_bundle(bundle, precision="fp32", threads=1)
    prompts = section["verify"]["inputs"]["prompts"]
    tokens = enc.tokenize(prompts)
    size = int(section["image"]["size"])
    images, _ = _verify_images(size, ClipPreprocess.from_section(section["image"]))
    files = dict(manifest.files)
    verify = dict(section["verify"])
    with tempfile.TemporaryDirectory(prefix="requant-") as tmp:
        for tower, feed in (("image", images), ("text", tokens.astype(np.int32))):
            fp32 = bundle / clip_file(tower, "fp32")
            int8_tmp = Path(tmp) / clip_file(tower, "int8")
            quantize(fp32, int8_tmp, QUANT_OPS_BY_TOWER[tower])
            name = create_session(fp32).get_inputs()[0].name
            ref = create_session(fp32, threads=1).run(None, {name: feed})[0]
            got = create_session(int8_tmp, threads=1).run(None, {name: feed})[0]
            cos = _cosines(got, ref)
            verify[f"{tower}_int8"] = {
                "cosine_min": round(float(cos.min()), 7),
                "cosine_mean": round(float(cos.mean()), 7),
                "max_abs": float(np.abs(got - ref).max()),
                "against": "the bundle's fp32 ONNX (requantize_clip.py)",
            }
            print(f"{tower} int8 vs fp32: cosine min {cos.min():.6f} mean {cos.mean():.6f}")
            if cos.min() < 0.99:
                raise SystemExit(f"{tower}: int8 cosine {cos.min():.4f} < 0.99; bundle unchanged")
        for tower in ("image", "text"):
            name = clip_file(tower, "int8")
            shutil.copyfile(Path(tmp) / name, bundle / name)
            files[name] = file_entry(bundle / name, "asset")
    section["verify"] = verify
    section["quantization"] = quantization_section()
    extra = dict(manifest.extra)
    extra["clip"] = section
    write_manifest(bundle, replace(manifest, files=files, extra=extra))
    ClipEncoder.from_bundle(bundle, precision="int8", threads=1).encode_text(["a red circle"])
    print(f"{bundle}: CLIP int8 re-quantized (uint8 weights), bundle.json updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
