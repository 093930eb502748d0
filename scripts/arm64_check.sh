#!/usr/bin/env bash
# arm64 correctness check without a Pi: runs the runtime on real aarch64 wheels under
# qemu-user emulation and compares its masks with this (x86) machine's.
#
# Steps (the root filesystem and wheels are cached under ROOT, so re-runs take minutes):
#   1. binfmt_misc + qemu-user-static/debootstrap (apt) on the host
#   2. Debian bookworm arm64 root (debootstrap minbase: Python 3.11.2, apt's numpy 1.24.2,
#      the Raspberry Pi OS Bookworm versions)
#   3. aarch64 wheels from scripts/constraints-pi.txt (onnxruntime, opencv-python-headless 4.11)
#      plus pure-Python test deps, downloaded on the host; a --system-site-packages venv
#   4. proc/sys/dev mounts and a fake ARM /proc/cpuinfo (onnxruntime's cpuinfo parser crashes on
#      the host's x86 one; see docs/arm64.md)
#   5. inside the chroot: platform.machine() (must be aarch64), versions, a few runtime unit-test
#      modules, one `fastsam-edge segment` per precision on a demo scene
#   6. on the host: the same segment calls, then masks compared (fp32 must reach IoU >= 0.999 per
#      mask; int8 agreement is reported, ARM int8 kernels differ from x86's)
#
# Needs root and a Debian mirror: DEBIAN_MIRROR, else the host's own apt sources (the first
# enabled ".../debian" archive in /etc/apt/sources.list{,.d}); no mirror is written in this repo.
# Emulation is ~75x slower than native: correctness only, never timing. Not part of default CI;
# `pytest -m arm64` runs it (FASTSAM_ARM64_CHECK=1 to opt in).
#
# Usage: sudo scripts/arm64_check.sh [--root DIR] [--out DIR] [--tests "FILES..."] [--python PY]
#   --root DIR   rootfs cache (default: /var/cache/fastsam-edge/arm64-root; outside the source
#                tree, whose copy in the root would otherwise hold live proc/sys/dev mounts)
#   --out DIR    JSON results + check.log (default: work/arm64-out)
#   --tests STR  runtime test modules run inside (default below; "" to skip)
#   --python PY  host interpreter with the runtime installed (default: python3)
#   --cpu MODEL  qemu CPU model: cortex-a76 (default; Pi 5: dot product, no i8mm) or cortex-a72
#                (Pi 4: no dot product); sets QEMU_CPU and a matching fake /proc/cpuinfo
#   --agreement "BUNDLE..."  also measure int8 vs fp32 agreement of these bundles on held-out
#                scenes with the emulated CPU's integer kernels (scripts/int8_agreement.py),
#                next to this host's kernels and the CPU-independent reference
#   --agreement-scenes N     held-out scenes per bundle (default 16)
#   --agreement-conf C       score threshold for the agreement runs (default: each bundle's)
#   --agreement-world W      scene style of the agreement scenes: demo (default) or texture
#   --agreement-objects A,B  objects per agreement scene (default 3,8; the model's training mix)
#   --print-mirror       print the Debian mirror that would be used, and exit (no root)
#   --write-scene PNG    write the demo scene the check segments, and exit (no root)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="${ARM64_ROOT:-/var/cache/fastsam-edge/arm64-root}"
OUT="$REPO/work/arm64-out"
TESTS="tests/test_preprocess.py tests/test_postprocess.py tests/test_encode.py tests/test_types.py tests/test_bundle.py"
HOST_PY="python3"
APT_ETC="${APT_ETC:-/etc/apt}"  # tests point this at a fake apt configuration
IMAGE_SEED=1000042
ACTION=check
CPU_MODEL=cortex-a76
AGREEMENT=""
AGREEMENT_SCENES=16
AGREEMENT_CONF=""

while (($#)); do
    case "$1" in
        --root) ROOT="$(realpath -m "$2")"; shift 2 ;;
        --out) OUT="$(realpath -m "$2")"; shift 2 ;;
        --tests) TESTS="$2"; shift 2 ;;
        --python) HOST_PY="$2"; shift 2 ;;
        --cpu) CPU_MODEL="$2"; shift 2 ;;
        --agreement) AGREEMENT="$2"; shift 2 ;;
        --agreement-scenes) AGREEMENT_SCENES="$2"; shift 2 ;;
        --agreement-conf) AGREEMENT_CONF="$AGREEMENT_CONF --conf $2"; shift 2 ;;
        --agreement-world) AGREEMENT_CONF="$AGREEMENT_CONF --world $2"; shift 2 ;;
        --agreement-objects) AGREEMENT_CONF="$AGREEMENT_CONF --objects $2"; shift 2 ;;
        --print-mirror) ACTION=print-mirror; shift ;;
        --write-scene) ACTION=write-scene; SCENE_OUT="$(realpath -m "$2")"; shift 2 ;;
        -h|--help) sed -n '2,39p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "arm64_check: unknown argument: $1" >&2; exit 2 ;;
    esac
done

log() { printf '[arm64-check %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

# The emulated CPU: qemu's model (its HWCAP bits are what onnxruntime's kernel dispatch sees)
# and the /proc/cpuinfo that goes with it (onnxruntime and edge.cpu read that file too).
case "$CPU_MODEL" in
    cortex-a76)  # Raspberry Pi 5 (BCM2712)
        CPU_FEATURES="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
        CPU_VARIANT=0x4; CPU_PART=0xd0b; CPU_NAME="Cortex-A76" ;;
    cortex-a72)  # Raspberry Pi 4 (BCM2711)
        CPU_FEATURES="fp asimd evtstrm crc32 cpuid"
        CPU_VARIANT=0x0; CPU_PART=0xd08; CPU_NAME="Cortex-A72" ;;
    *) die "--cpu: expected cortex-a76 or cortex-a72, got '$CPU_MODEL'" ;;
esac

# shellcheck source=scripts/debian_mirror.sh
source "$REPO/scripts/debian_mirror.sh"

# The scene the check segments. generate_scene returns BGR (OpenCV's order): written as is.
write_scene() {
    "$HOST_PY" - "$1" "$IMAGE_SEED" <<'EOF'
import sys
import cv2
from edge.demo.scenes import generate_scene
scene = generate_scene(int(sys.argv[2]), width=480, height=360)
if not cv2.imwrite(sys.argv[1], scene.image):
    sys.exit(f"cannot write {sys.argv[1]}")
EOF
}

case "$ACTION" in
    print-mirror) debian_mirror; exit 0 ;;
    write-scene) (cd "$REPO" && write_scene "$SCENE_OUT"); exit 0 ;;
esac

[[ $EUID -eq 0 ]] || die "needs root (debootstrap, chroot, mounts)"
MIRROR="$(debian_mirror)"
mkdir -p "$OUT"
exec > >(tee "$OUT/check.log") 2>&1

# --- 1. host: binfmt_misc + qemu ------------------------------------------------------------
if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
    log "mounting binfmt_misc"
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if ! command -v debootstrap >/dev/null || [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
    log "installing qemu-user-static debootstrap binfmt-support (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y qemu-user-static debootstrap binfmt-support \
        >"$OUT/apt.log" 2>&1 || die "apt-get install failed, see $OUT/apt.log"
fi
[[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] || die "no qemu-aarch64 binfmt entry"
# F (fix-binary) lets chrooted aarch64 binaries run without copying qemu into the root
grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
    || die "qemu-aarch64 binfmt entry lacks the F flag: $(grep flags /proc/sys/fs/binfmt_misc/qemu-aarch64)"

# --- 2. rootfs --------------------------------------------------------------------------------
if [[ ! -e "$ROOT/.fastsam-rootfs-ok" ]]; then
    log "debootstrap bookworm arm64 into $ROOT from $MIRROR (about 5 minutes)"
    rm -rf "$ROOT"
    mkdir -p "$ROOT"
    debootstrap --arch=arm64 --variant=minbase \
        --include=python3,python3-venv,python3-pip,python3-numpy,ca-certificates \
        bookworm "$ROOT" "$MIRROR" >"$OUT/debootstrap.log" 2>&1 \
        || die "debootstrap failed, see $OUT/debootstrap.log"
    touch "$ROOT/.fastsam-rootfs-ok"
fi

# --- 3. wheels (host download, offline install inside) -----------------------------------------
pin() { grep -E "^$1==" "$REPO/scripts/constraints-pi.txt" | head -1; }
ORT_PIN="$(pin onnxruntime)"
CV_PIN="$(pin opencv-python-headless)"
COCO_PIN="$(pin pycocotools)"
[[ -n "$ORT_PIN" && -n "$CV_PIN" ]] || die "pins missing from scripts/constraints-pi.txt"
mkdir -p "$ROOT/wheels"
if [[ ! -e "$ROOT/wheels/.ok3-$ORT_PIN-$CV_PIN" ]]; then
    log "downloading aarch64 wheels: $ORT_PIN $CV_PIN"
    "$HOST_PY" -m pip download -q --no-deps --only-binary=:all: \
        --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
        --platform manylinux_2_17_aarch64 --python-version 3.11 --implementation cp \
        -d "$ROOT/wheels" "$ORT_PIN" "$CV_PIN" "$COCO_PIN" protobuf flatbuffers packaging \
        || die "pip download (aarch64 wheels) failed"
    # pure-Python deps (tqdm: a runtime dependency; pytest), resolved for the target
    "$HOST_PY" -m pip download -q --only-binary=:all: --platform manylinux2014_aarch64 \
        --python-version 3.11 --implementation cp -d "$ROOT/wheels" pytest tqdm \
        || die "pip download (pytest) failed"
    touch "$ROOT/wheels/.ok3-$ORT_PIN-$CV_PIN"
fi

# --- 4. mounts + fake cpuinfo ------------------------------------------------------------------
cleanup() {
    for m in proc sys dev; do
        if mountpoint -q "$ROOT/$m"; then umount -R "$ROOT/$m" || umount -lR "$ROOT/$m" || true; fi
    done
}
trap cleanup EXIT
cleanup
mount -t proc proc "$ROOT/proc"
mount --rbind /sys "$ROOT/sys" && mount --make-rslave "$ROOT/sys"
mount --rbind /dev "$ROOT/dev" && mount --make-rslave "$ROOT/dev"
CPUINFO="$ROOT/root/cpuinfo.arm64"
{
    for ((i = 0; i < $(nproc); i++)); do
        printf 'processor\t: %d\nBogoMIPS\t: 108.00\n' "$i"
        printf 'Features\t: %s\n' "$CPU_FEATURES"
        printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: 1\n\n' "$CPU_VARIANT" "$CPU_PART"
    done
    printf 'Revision\t: d04170\nModel\t\t: emulated %s (qemu-user, fastsam-edge arm64 check)\n' "$CPU_NAME"
} >"$CPUINFO"
mount --bind "$CPUINFO" "$ROOT/proc/cpuinfo"

# --- 5. inside the chroot ----------------------------------------------------------------------
log "copying the working tree (tracked + untracked, not ignored) to $ROOT/src"
rm -rf "$ROOT/src" && mkdir -p "$ROOT/src"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
    | tar --null -T - -cf - 2>/dev/null) | tar -xf - -C "$ROOT/src"

write_scene "$ROOT/src/scene.png"

AGREE_NAMES=""
rm -rf "$ROOT/bundles" && mkdir -p "$ROOT/bundles"
i=0
for b in $AGREEMENT; do
    [[ -f "$b/bundle.json" ]] || die "--agreement: $b is not a bundle (no bundle.json)"
    cp -r "$b" "$ROOT/bundles/b$i"
    AGREE_NAMES="$AGREE_NAMES b$i"
    i=$((i + 1))
done

cat >"$ROOT/src/arm64_inside.sh" <<EOF
set -eu
cd /src
if [ ! -x /opt/venv/bin/python ] || [ ! -e /opt/venv/.ok2-$ORT_PIN-$CV_PIN ]; then
    rm -rf /opt/venv
    python3 -m venv --system-site-packages /opt/venv
    /opt/venv/bin/pip install -q --no-index --find-links /wheels \
        $ORT_PIN $CV_PIN $COCO_PIN pytest tqdm
    touch /opt/venv/.ok2-$ORT_PIN-$CV_PIN
fi
export PYTHONPATH=/src PYTHONDONTWRITEBYTECODE=1
/opt/venv/bin/python - <<'PY'
import platform, sys
import numpy, cv2, onnxruntime as ort
import edge
print("platform.machine() =", platform.machine())
print("python", sys.version.split()[0], "| numpy", numpy.__version__, "| opencv", cv2.__version__,
      "| onnxruntime", ort.__version__, ort.get_available_providers())
assert platform.machine() == "aarch64", platform.machine()
assert "torch" not in sys.modules and "onnx" not in sys.modules
PY
if [ -n "$TESTS" ]; then
    /opt/venv/bin/python -m pytest -q -p no:cacheprovider -m "not export" $TESTS
fi
/opt/venv/bin/python -m edge.cpu | tee /src/arm64-kernel-check.json
for b in $AGREE_NAMES; do
    /opt/venv/bin/python scripts/int8_agreement.py /bundles/\$b --kernels host \
        --scenes $AGREEMENT_SCENES $AGREEMENT_CONF --threads 2 --out /src/agree-\$b.json
done
for p in fp32 int8; do
    /opt/venv/bin/python -m edge.cli info --bundle edge/demo/assets/demo-bundle | head -3
    /opt/venv/bin/python -m edge.cli segment scene.png --bundle edge/demo/assets/demo-bundle \
        --precision \$p --threads 2 --json /src/arm64-\$p.json
done
EOF
log "running inside the arm64 chroot (emulated: slow)"
# a clean environment: the host's PIP_*/PYTHON* settings must not leak into the chroot
env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 QEMU_CPU="$CPU_MODEL" \
    chroot "$ROOT" /bin/sh /src/arm64_inside.sh || die "arm64 run failed"

# --- 6. compare with x86 -----------------------------------------------------------------------
for p in fp32 int8; do
    cp "$ROOT/src/arm64-$p.json" "$OUT/arm64-$p.json"
    (cd "$REPO" && "$HOST_PY" -m edge.cli segment "$ROOT/src/scene.png" \
        --bundle edge/demo/assets/demo-bundle --precision "$p" --threads 2 --json "$OUT/x86-$p.json")
done
log "comparing arm64 masks with x86 masks"
"$HOST_PY" - "$OUT" <<'EOF'
import json
import sys
from pathlib import Path

import numpy as np

from edge.encode import decode_rle
from edge.metrics import mask_iou_matrix

out = Path(sys.argv[1])
summary = {}
ok = True
for prec in ("fp32", "int8"):
    arm = json.loads((out / f"arm64-{prec}.json").read_text())
    x86 = json.loads((out / f"x86-{prec}.json").read_text())
    a = np.stack([decode_rle(m["rle"]) for m in arm["masks"]]) if arm["masks"] else None
    b = np.stack([decode_rle(m["rle"]) for m in x86["masks"]]) if x86["masks"] else None
    if a is None or b is None:
        best_ab = best_ba = np.zeros(0)
    else:
        iou = mask_iou_matrix(a, b)
        best_ab, best_ba = iou.max(axis=1), iou.max(axis=0)
    row = {
        "masks_arm64": len(arm["masks"]),
        "masks_x86": len(x86["masks"]),
        "min_iou_arm64_to_x86": round(float(best_ab.min()), 6) if best_ab.size else None,
        "min_iou_x86_to_arm64": round(float(best_ba.min()), 6) if best_ba.size else None,
        "mean_iou": round(float(np.concatenate([best_ab, best_ba]).mean()), 6)
        if best_ab.size else None,
        "max_score_diff": round(max(abs(p["score"] - q["score"])
                                    for p, q in zip(arm["masks"], x86["masks"])), 6)
        if arm["masks"] and len(arm["masks"]) == len(x86["masks"]) else None,
    }
    summary[prec] = row
    print(f"{prec}: {row}")
    if prec == "fp32":
        ok &= row["masks_arm64"] == row["masks_x86"] and (
            row["masks_x86"] == 0 or min(row["min_iou_arm64_to_x86"],
                                         row["min_iou_x86_to_arm64"]) >= 0.999)
(out / "compare.json").write_text(json.dumps(summary, indent=2) + "\n")
print("fp32 arm64 == x86 (IoU >= 0.999):", "PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
EOF
cp "$ROOT/src/arm64-kernel-check.json" "$OUT/kernel-check-$CPU_MODEL.json"
for b in $AGREE_NAMES; do
    cp "$ROOT/src/agree-$b.json" "$OUT/agree-$b-arm64.json"
    (cd "$REPO" && "$HOST_PY" scripts/int8_agreement.py "$ROOT/bundles/$b" --kernels both \
        --scenes "$AGREEMENT_SCENES" $AGREEMENT_CONF --threads 2 --out "$OUT/agree-$b-host.json")
done
log "int8 kernels and agreement on the emulated $CPU_NAME"
"$HOST_PY" - "$OUT" "$CPU_MODEL" $AGREE_NAMES <<'EOF'
import json
import sys
from pathlib import Path

out, cpu, names = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
k = json.loads((out / f"kernel-check-{cpu}.json").read_text())
print(f"int8 class on the emulated CPU: {k['class']['name']} (flags {k['class']['flags']}); "
      f"MatMul exact {k['matmul_exact']}, conv error fused {k['conv_fused_err']} / reference "
      f"{k['conv_reference_err']} output steps")
ok = k["matmul_exact"] and k["conv_fused_err"] <= 1.0
rows = []
for b in names:
    arm = json.loads((out / f"agree-{b}-arm64.json").read_text())
    host = json.loads((out / f"agree-{b}-host.json").read_text())
    row = {"bundle": arm["bundle"], "cpu_model": cpu, "arm_class": arm["int8_class"]["name"],
           "scenes": arm["scenes"]}
    for side, rep in (("arm64", arm["host"]), ("x86_host", host["host"]),
                      ("reference", host["reference"])):
        row[side] = {key: rep[key] for key in ("mean_iou_fp32_to_int8", "mean_iou_int8_to_fp32",
                                               "recall_fp32", "recall_int8")}
    row["x86_class"] = host["int8_class"]["name"]
    gap = max(abs(row["arm64"][key] - row["reference"][key])
              for key in ("mean_iou_fp32_to_int8", "mean_iou_int8_to_fp32"))
    row["reference_predicts_arm64"] = gap <= 0.01
    rows.append(row)
    print(json.dumps(row))
(out / f"agreement-{cpu}.json").write_text(json.dumps(rows, indent=1) + "\n")
print("ARM int8 kernels exact:", "PASS" if ok else "FAIL")
print("reference predicts the ARM agreement within 0.01:",
      "PASS" if all(r["reference_predicts_arm64"] for r in rows) else "FAIL")
sys.exit(0 if ok else 1)
EOF
log "done: $OUT/check.log, $OUT/compare.json"
