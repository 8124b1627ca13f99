"""The .tflite files work outside ghostedge: Google's metadata reader and a real C client agree with us.

One export of ghostnet_cifar_050 (seeded random weights, FP32 + INT8, calibrated on CIFAR-10 *train*
photos) is checked three ways:

* tflite-support 0.4.4's ``MetadataDisplayer`` (in a cached tool venv of its own, see
  :func:`tflite_support_python`) reads every standard metadata field and the packed labels.txt;
* ``examples/classify.c``, built with gcc against the ai-edge-litert wheel's ``libLiteRt.so``, classifies
  held-out CIFAR-10 *test* photos using only what the model file says, and its pixels, inputs, logits
  and top-1 classes equal ghostedge's own (``eval``'s preprocessing + ``load_runner``) image by image;
* the same client cross-compiled for aarch64 (Debian's gcc-aarch64-linux-gnu, against the aarch64
  sysroot's ``libLiteRt.so``, codecs linked statically) and run under ``qemu-aarch64 -cpu cortex-a76``.

Debian packages these tests use (skipped, with the command, where one is missing):
gcc libjpeg62-turbo-dev libpng-dev zlib1g-dev (x86-64 client), gcc-aarch64-linux-gnu qemu-user (aarch64
client; its arm64 libjpeg/libpng/zlib .debs are only downloaded and unpacked, with ``apt-get download``
after ``dpkg --add-architecture arm64``), and a Python 3.9-3.11 for tflite-support.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

from ghostnet_edge.utils.paths import cache_home

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
MODEL = "ghostnet_cifar_050"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TFLITE_SUPPORT = "tflite-support==0.4.4"
ARM64_DEBS = ("libjpeg62-turbo", "libjpeg62-turbo-dev", "libpng16-16", "libpng-dev", "zlib1g", "zlib1g-dev")
QEMU_CPU = "cortex-a76"


def _litert_dir() -> Path:
    import ai_edge_litert

    return Path(ai_edge_litert.__file__).parent


# ------------------------------------------------------------------------------------------------
# the export under test


@pytest.fixture(scope="module")
def images(cifar_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from ghostnet_edge.calib.sampler import extract_tar_images

    root = tmp_path_factory.mktemp("cifar")
    assert extract_tar_images(cifar_tar, root / "test", per_class=4, split="test") == 40
    assert extract_tar_images(cifar_tar, root / "train", per_class=4, split="train") == 40
    return {"test": root / "test", "train": root / "train"}


def _export(images: dict[str, Path], base: Path, io_dtype: str = "int8") -> Path:
    """model_fp32.tflite + model_int8.tflite of a seeded ghostnet_cifar_050, calibrated on train photos."""
    from ghostnet_edge.export.pipeline import ExportConfig, export_artifacts
    from ghostnet_edge.models import create_model, save_checkpoint

    ckpt = base / "ghost.pt"
    save_checkpoint(ckpt, create_model(MODEL, seed=0), {"class_names": CIFAR_CLASSES, "seed": 0})
    out = base / "export"
    export_artifacts(ExportConfig(checkpoint=ckpt, calib=images["train"], out=out, formats=("tflite",),
                                  num_calib=24, num_verify=12, threads=1, min_agreement=0.0, use_cache=False,
                                  io_dtype=io_dtype))
    return out


@pytest.fixture(scope="module")
def exported(images: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(images, tmp_path_factory.mktemp("client_export"))


def _test_images(images: dict[str, Path]) -> list[Path]:
    return sorted(images["test"].rglob("*.jpg"))


def _reference(model_path: Path, files: list[Path]) -> dict[str, np.ndarray]:
    """What ghostedge itself does with these files: eval's preprocessing (from the artifact) + load_runner."""
    from ghostnet_edge.data import Preprocess
    from ghostnet_edge.data.images import load_rgb
    from ghostnet_edge.runtime.artifacts import inspect_artifact
    from ghostnet_edge.runtime.backends import load_runner
    from ghostnet_edge.runtime.evaluate import artifact_preprocess

    pre, _ = artifact_preprocess(inspect_artifact(model_path))
    prep = Preprocess(input_size=pre["input_size"], mean=pre["mean"], std=pre["std"],
                      resize_size=pre["resize_size"], interpolation=pre["interpolation"])
    pixels = np.stack([prep.eval_geometry(load_rgb(f)) for f in files])
    x = prep.finish(pixels)
    runner = load_runner(model_path)
    return {"pixels": pixels, "x": x, "logits": runner.run(x), "input_quant": runner.model.input_quant,
            "input_dtype": runner.model.input_dtype}


# ------------------------------------------------------------------------------------------------
# 1. Google's own reader


TOOL_SCRIPT = r"""
import json, sys
from tflite_support import metadata
out = {}
for path in sys.argv[1:]:
    d = metadata.MetadataDisplayer.with_model_file(path)
    files = d.get_packed_associated_file_list()
    out[path] = {"metadata": json.loads(d.get_metadata_json()), "files": files,
                 "contents": {f: d.get_associated_file_buffer(f).decode("utf-8") for f in files}}
print(json.dumps(out))
"""


def tflite_support_python() -> Path:
    """The python of a cached venv with tflite-support 0.4.4 (cp39-cp311 wheels; numpy < 2), or skip."""
    try:
        from ghostnet_edge.runtime import venvs
    except ImportError as exc:  # pragma: no cover - the venv helper ships with ghostedge
        pytest.skip(f"ghostnet_edge.runtime.venvs is not available ({exc})")
    python = next((p for p in (venvs.find_python(v) for v in ("3.11", "3.10", "3.9")) if p is not None), None)
    if python is None:
        pytest.skip("tflite-support 0.4.4 needs Python 3.9-3.11 and none was found (pyenv install 3.11)")
    try:
        venv = venvs.ensure_venv(python, (TFLITE_SUPPORT, "numpy<2"), label="tflite-support", kind="tool-venvs",
                                 wheel_check=TFLITE_SUPPORT)
    except venvs.VenvError as exc:
        pytest.skip(f"cannot build the tflite-support venv: {exc.message}")
    return venv.python


def read_with_tflite_support(paths: list[Path]) -> dict[str, dict]:
    from ghostnet_edge.runtime.venvs import clean_env

    python = tflite_support_python()
    done = subprocess.run([str(python), "-c", TOOL_SCRIPT, *map(str, paths)], capture_output=True, text=True,
                          timeout=300, env=clean_env())
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.slow
def test_tflite_support_reads_every_field(exported: Path) -> None:
    from ghostnet_edge.export.tflite.metadata import read_embedded_metadata
    from ghostnet_edge.utils.versions import package_versions

    labels_txt = (exported / "labels.txt").read_text()
    paths = [exported / "model_fp32.tflite", exported / "model_int8.tflite"]
    seen = read_with_tflite_support(paths)
    version = package_versions(("ghostedge",))["ghostedge"]
    for path in paths:
        got = seen[str(path)]
        m = got["metadata"]
        info = read_embedded_metadata(path)["info"]
        pre = read_embedded_metadata(path)["preprocessing"]
        int8 = "int8" in path.name
        assert m["name"] == MODEL
        assert m["version"] == f"{version}+onnx.{info['source_onnx_sha256'][:12]}"
        assert m["author"] == "ghostedge" and m["license"] == "Apache-2.0" and m["min_parser_version"] == "1.0.0"
        assert m["description"].startswith(f"{MODEL}: image classifier exported by ghostedge")
        assert ("INT8 full-integer, int8 input and int8 output" in m["description"]) == int8
        (sg,) = m["subgraph_metadata"]
        (tin,) = sg["input_tensor_metadata"]
        (tout,) = sg["output_tensor_metadata"]
        assert tin["name"] == "image" and "Resize the shorter side to 32" in tin["description"]
        assert ("quantise with this tensor's scale and zero point" in tin["description"]) == int8
        assert tin["content"]["content_properties_type"] == "ImageProperties"
        assert tin["content"]["content_properties"] == {"color_space": "RGB",
                                                         "default_size": {"width": 32, "height": 32}}
        (unit,) = tin["process_units"]
        assert unit["options_type"] == "NormalizationOptions"
        mean, std = np.array(pre["mean"]), np.array(pre["std"])
        # The schema's pixels are 0-255: mean/std x 255 (flatbuffers prints 6 significant digits).
        np.testing.assert_allclose(unit["options"]["mean"], mean * 255, rtol=1e-5)
        np.testing.assert_allclose(unit["options"]["std"], std * 255, rtol=1e-5)
        np.testing.assert_allclose(tin["stats"]["min"], (0 - mean) / std, rtol=1e-5)
        np.testing.assert_allclose(tin["stats"]["max"], (1 - mean) / std, rtol=1e-5)
        assert tout["name"] == "logits" and "10 values in the order of labels.txt" in tout["description"]
        assert tout["content"]["content_properties_type"] == "FeatureProperties"
        assert tout["associated_files"] == [{"name": "labels.txt", "type": "TENSOR_AXIS_LABELS",
                                             "description": "Class names, one per line, in the order of the "
                                                            "output values."}]
        assert got["files"] == ["labels.txt"]
        assert got["contents"]["labels.txt"] == labels_txt
        assert labels_txt.split() == CIFAR_CLASSES


# ------------------------------------------------------------------------------------------------
# 2. the C client


def _compile(cmd: list[str], hint: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        if re.search(r"(jpeglib|png|zlib)\.h: No such file|cannot find -l(jpeg|png16|z)\b", done.stderr):
            pytest.skip(f"the image codec headers/libraries are missing: {hint}")
        raise AssertionError(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")


@pytest.fixture(scope="module")
def client_x86(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed (apt-get install gcc libjpeg62-turbo-dev libpng-dev zlib1g-dev)")
    lib = _litert_dir()
    if not (lib / "libLiteRt.so").is_file():
        pytest.skip(f"{lib} has no libLiteRt.so (ai-edge-litert too old or too new for this example)")
    exe = tmp_path_factory.mktemp("client") / "classify"
    _compile([gcc, "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(EXAMPLES / "classify.c"),
              f"-I{EXAMPLES}", f"-L{lib}", "-lLiteRt", f"-Wl,-rpath,{lib}", "-ljpeg", "-lpng16", "-lm"],
             "apt-get install libjpeg62-turbo-dev libpng-dev zlib1g-dev")
    return exe


def arm64_dev_root() -> Path:
    """arm64 libjpeg/libpng/zlib headers and static libraries, unpacked from Debian's .debs, cached.

    ``apt-get download`` + ``dpkg -x`` into a fresh folder that is renamed into place only when complete,
    so a killed run never leaves a half-unpacked cache. Skips (saying how to fix it) when apt cannot.
    """
    key = hashlib.sha256(" ".join(ARM64_DEBS).encode()).hexdigest()[:12]
    root = cache_home() / "cross-arm64" / f"codecs-{key}"
    if (root / "usr" / "include" / "jpeglib.h").is_file():
        return root
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        pytest.skip("no apt-get/dpkg to fetch the arm64 libjpeg/libpng .debs (a Debian/Ubuntu host is needed)")
    stage = root.parent / f".{root.name}.{uuid.uuid4().hex[:8]}"
    debs = stage / "debs"
    debs.mkdir(parents=True)
    try:
        done = subprocess.run(["apt-get", "download", *(f"{p}:arm64" for p in ARM64_DEBS)], cwd=debs,
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.skip("apt-get cannot download the arm64 codec packages "
                        f"({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no output'}); "
                        "run as root: dpkg --add-architecture arm64 && apt-get update")
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg", "-x", str(deb), str(stage / "tree")], check=True, timeout=120)
        try:
            os.rename(stage / "tree", root)
        except OSError:
            if not (root / "usr" / "include" / "jpeglib.h").is_file():  # not another run's finished copy
                raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return root


@pytest.fixture(scope="module")
def client_aarch64(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the aarch64 client, the sysroot to run it in) or skip, saying what is missing."""
    from ghostnet_edge.runtime.qemu import sysroot as sr

    cc = shutil.which("aarch64-linux-gnu-gcc")
    if cc is None:
        pytest.skip("no cross compiler: apt-get install gcc-aarch64-linux-gnu")
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 is not installed: apt-get install qemu-user")
    root = sr.sysroot_dir()
    lib = root / sr.GUEST_SITE.lstrip("/") / "ai_edge_litert"
    if not (lib / "libLiteRt.so").is_file():
        pytest.skip(f"the aarch64 sysroot is missing or has no libLiteRt.so ({root}): {sr.BUILD_COMMAND_INSTALLED}")
    dev = arm64_dev_root()
    arch_lib = dev / "usr" / "lib" / "aarch64-linux-gnu"
    exe = tmp_path_factory.mktemp("client_aarch64") / "classify"
    rpath_link = ":".join(str(root / d) for d in ("lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu"))
    _compile([cc, "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(EXAMPLES / "classify.c"),
              f"-I{EXAMPLES}", f"-I{dev / 'usr' / 'include'}", f"-I{dev / 'usr' / 'include' / 'aarch64-linux-gnu'}",
              f"-L{lib}", "-lLiteRt", f"-Wl,-rpath,{sr.GUEST_SITE}/ai_edge_litert", f"-Wl,-rpath-link,{rpath_link}",
              str(arch_lib / "libpng16.a"), str(arch_lib / "libjpeg.a"), str(arch_lib / "libz.a"), "-lm"],
             "the arm64 .debs unpacked in " + str(dev) + " are incomplete; delete that folder to fetch them again")
    return exe, root


def run_client(cmd_prefix: list[str], exe: Path, model: Path, files: list[Path], work: Path,
               top: int = 10) -> dict:
    dumps = {k: work / f"{model.stem}.{k}" for k in ("pixels", "input", "output")}
    done = subprocess.run([*cmd_prefix, str(exe), "--top", str(top), "--dump-pixels", str(dumps["pixels"]),
                           "--dump-input", str(dumps["input"]), "--dump-output", str(dumps["output"]),
                           str(model), *map(str, files)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    blocks = done.stdout.split("image: ")[1:]
    assert [b.splitlines()[0] for b in blocks] == [str(f) for f in files]
    top1 = np.array([int(re.search(r"#1  idx=(\d+)", b).group(1)) for b in blocks])
    n = len(files)
    return {"top1": top1, "stdout": done.stdout, "stderr": done.stderr,
            "pixels": np.fromfile(dumps["pixels"], np.uint8).reshape(n, 32, 32, 3),
            "x": np.fromfile(dumps["input"], np.float32).reshape(n, 32, 32, 3).transpose(0, 3, 1, 2),
            "logits": np.fromfile(dumps["output"], np.float32).reshape(n, 10)}


def _assert_agrees(got: dict, ref: dict, int8: bool, where: str) -> dict:
    """Image by image: same pixels, same (quantised) input, same logits, same top-1 as ghostedge."""
    n = len(got["top1"])
    assert np.array_equal(got["pixels"], ref["pixels"]), f"{where}: decoded/cropped pixels differ"
    dx = float(np.abs(got["x"] - ref["x"]).max())
    assert dx <= 1e-6, f"{where}: normalised input differs by {dx}"  # (p - m*255)/(s*255) vs (p/255 - m)/s
    stats = {"images": n, "max_input_diff": dx}
    if ref["input_quant"] is not None:
        scale, zero = ref["input_quant"]
        lo, hi = (-128, 127) if ref["input_dtype"] == "int8" else (0, 255)
        q_ref = np.clip(np.round(ref["x"] / np.float32(scale)) + zero, lo, hi)
        q_got = np.clip(np.round(got["x"] / np.float32(scale)) + zero, lo, hi)
        stats["int8_input_elements_differing"] = int((q_ref != q_got).sum())
        assert stats["int8_input_elements_differing"] == 0, f"{where}: quantised inputs differ"
    if int8:
        assert np.array_equal(got["logits"], ref["logits"]), f"{where}: INT8 logits differ"
    else:
        stats["max_logit_diff"] = float(np.abs(got["logits"] - ref["logits"]).max())
        assert stats["max_logit_diff"] <= 1e-4 * max(1.0, float(np.abs(ref["logits"]).max())), where
    want = ref["logits"].argmax(axis=1)
    stats["top1_matches"] = int((got["top1"] == want).sum())
    assert stats["top1_matches"] == n, f"{where}: top-1 differs on images {np.flatnonzero(got['top1'] != want)}"
    return stats


AGREEMENT: dict[str, dict] = {}


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_c_client_agrees_with_ghostedge_on_x86_64(exported: Path, images: dict[str, Path], client_x86: Path,
                                                  precision: str, tmp_path: Path) -> None:
    model = exported / f"model_{precision}.tflite"
    files = _test_images(images)
    got = run_client([], client_x86, model, files, tmp_path)
    stats = _assert_agrees(got, _reference(model, files), precision == "int8", f"x86-64 {precision}")
    AGREEMENT[f"x86_64/{precision}"] = stats
    print(f"\nC client, x86-64, {precision}: {stats}")
    assert f"model: {MODEL} (version " in got["stderr"] and "10 labels from labels.txt" in got["stderr"]
    first = got["stdout"].split("image: ")[1].splitlines()
    assert len(first) == 11 and all(re.match(r"  #\d+  idx=\d  \w+  p=[\d.]+  logit=-?[\d.]+$", ln) for ln in first[1:])


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_c_client_agrees_with_ghostedge_on_aarch64_under_qemu(exported: Path, images: dict[str, Path],
                                                              client_aarch64: tuple[Path, Path], precision: str,
                                                              tmp_path: Path) -> None:
    exe, root = client_aarch64
    model = exported / f"model_{precision}.tflite"
    files = _test_images(images)
    got = run_client(["qemu-aarch64", "-cpu", QEMU_CPU, "-L", str(root)], exe, model, files, tmp_path)
    stats = _assert_agrees(got, _reference(model, files), precision == "int8", f"aarch64 {precision}")
    AGREEMENT[f"aarch64/{precision}"] = stats
    print(f"\nC client, aarch64 ({QEMU_CPU}, qemu), {precision}: {stats}")


@pytest.mark.slow
@pytest.mark.parametrize("io_dtype", ["uint8", "float32"])
def test_c_client_handles_uint8_and_float_ended_int8_models(images: dict[str, Path], client_x86: Path,
                                                            io_dtype: str, tmp_path: Path) -> None:
    out = _export(images, tmp_path, io_dtype=io_dtype)
    model = out / "model_int8.tflite"
    files = _test_images(images)[::4]
    got = run_client([], client_x86, model, files, tmp_path)
    assert f"input 32x32x3 {io_dtype}" in got["stderr"]
    stats = _assert_agrees(got, _reference(model, files), True, f"x86-64 int8 ({io_dtype} I/O)")
    print(f"\nC client, x86-64, int8 with {io_dtype} input/output: {stats}")


# ------------------------------------------------------------------------------------------------
# preprocessing beyond 32x32 JPEGs, and refusals


def _variants(src: Path, out: Path) -> list[Path]:
    """The decoding paths ghostedge handles, made from one CIFAR photo (Pillow writes them)."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    img = Image.open(src).convert("RGB")
    big = img.resize((45, 37), Image.BICUBIC)           # landscape, odd margins after the resize
    tall = img.resize((29, 50), Image.BICUBIC)          # portrait, upscaled shorter side
    files = []

    def save(im: Image.Image, name: str, **kw: object) -> None:
        im.save(out / name, **kw)
        files.append(out / name)

    save(big, "landscape.jpg", quality=90)
    save(tall, "portrait.png")
    save(img.resize((64, 64), Image.BICUBIC), "downscale.jpg", quality=95)
    save(big.convert("L"), "grey.jpg")
    save(big.convert("L"), "grey.png")
    save(big.convert("P", palette=Image.ADAPTIVE, colors=16), "palette.png")
    pal = big.convert("P", palette=Image.ADAPTIVE, colors=16)
    save(pal, "palette_trns.png", transparency=3)
    rgba = big.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(big.size))
    save(rgba, "rgba.png")
    la = big.convert("L").convert("LA")
    la.putalpha(Image.linear_gradient("L").rotate(90).resize(big.size))
    save(la, "la.png")
    grey16 = Image.fromarray((np.asarray(big.convert("L"), dtype=np.uint16) * 257 + 77).astype(np.uint16))
    save(grey16, "grey16.png")
    save(big.convert("1"), "bilevel.png")
    for orientation in range(2, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        save(big, f"exif{orientation}.jpg", exif=exif.tobytes(), quality=90)
    return files


@pytest.mark.slow
def test_c_client_preprocessing_matches_ghostedge_beyond_cifar_jpegs(exported: Path, images: dict[str, Path],
                                                                     client_x86: Path, tmp_path: Path) -> None:
    files = _variants(_test_images(images)[0], tmp_path / "variants")
    model = exported / "model_int8.tflite"
    got = run_client([], client_x86, model, files, tmp_path)
    ref = _reference(model, files)
    bad = [f.name for f, a, b in zip(files, got["pixels"], ref["pixels"], strict=True) if not np.array_equal(a, b)]
    assert bad == [], f"pixels differ from ghostedge's preprocessing for {bad}"
    assert np.array_equal(got["logits"], ref["logits"])


def _without(data: bytes, name: bytes) -> bytes:
    """The model with its metadata entry ``name`` renamed (same length: the flatbuffer stays valid)."""
    assert data.count(name) == 1
    return data.replace(name, name[:-1] + b"X")


@pytest.mark.slow
def test_c_client_refuses_what_it_cannot_trust(exported: Path, images: dict[str, Path], client_x86: Path,
                                               tmp_path: Path) -> None:
    from ghostnet_edge.export.tflite import metadata as md

    good = (exported / "model_int8.tflite").read_bytes()
    photo = _test_images(images)[0]

    def run(model_bytes: bytes, *imgs: Path) -> subprocess.CompletedProcess:
        path = tmp_path / "m.tflite"
        path.write_bytes(model_bytes)
        return subprocess.run([str(client_x86), str(path), *map(str, imgs or (photo,))], capture_output=True,
                              text=True, timeout=120)

    # no standard metadata: refused, however much else the file carries
    done = run(_without(good, b"TFLITE_METADATA"))
    assert done.returncode == 2 and "has no TFLite metadata" in done.stderr and done.stdout == ""
    # no labels packed / labels damaged
    flat, files = md.split_packed_files(good)
    done = run(flat)
    assert done.returncode == 2 and "labels.txt is named in the metadata but not packed" in done.stderr
    damaged = bytearray(good)
    at = good.rindex(b"airplane")
    damaged[at] ^= 0x20
    done = run(bytes(damaged))
    assert done.returncode == 2 and "CRC" in done.stderr
    # labels that do not fit the output
    done = run(md.pack_associated_files(flat, {"labels.txt": b"a\nb\n"}))
    assert done.returncode == 2 and "2 labels but the model outputs 10 scores" in done.stderr
    # undecodable images: named, the others still classified, exit 3
    junk = tmp_path / "junk.jpg"
    junk.write_text("not an image")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(photo.read_bytes()[:300])
    done = run(good, junk, photo, cut)
    assert done.returncode == 3
    assert f"cannot decode {junk}: not a JPEG or PNG file" in done.stderr
    assert re.search(rf"cannot decode {re.escape(str(cut))}: (the JPEG data is truncated|corrupt JPEG)", done.stderr)
    assert done.stdout.count("image: ") == 1 and f"image: {photo}" in done.stdout
    # not a model at all
    done = run(b"\0" * 64)
    assert done.returncode == 2 and "not a readable TFLite model" in done.stderr
    # usage
    done = subprocess.run([str(client_x86)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "usage:" in done.stderr
