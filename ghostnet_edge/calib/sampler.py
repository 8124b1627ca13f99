"""Which images INT8 calibration sees, and which ones verification keeps for itself.

Calibration ranges are fitted on one set of real images and every artifact is checked on another,
held-out set: checking a quantized model on the very images its ranges were fitted to would hide
exactly the clipping errors the check is there to find. Both sets are drawn from the sorted file list
with a seeded generator, so the same folder and seed always give the same images on any machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ghostnet_edge.calib.defaults import DEFAULT_NUM_CALIB, DEFAULT_NUM_VERIFY
from ghostnet_edge.data.images import IMAGE_EXTENSIONS, is_image_file
from ghostnet_edge.errors import DataError

# Below this many images the activation ranges are noticeably noisier; warn but go on.
MIN_RECOMMENDED_CALIB = 32



@dataclass(frozen=True)
class ImageSet:
    """An ordered selection of image files under one root, with what is known about their classes."""

    root: Path
    files: tuple[Path, ...]
    labels: tuple[str | None, ...]
    num_available: int
    num_requested: int
    warnings: tuple[str, ...] = field(default=())

    @property
    def count(self) -> int:
        return len(self.files)

    @property
    def classes(self) -> list[str]:
        """Distinct class names among the selected files (empty when the folder is unlabelled)."""
        return sorted({lab for lab in self.labels if lab is not None})

    @property
    def relative_paths(self) -> list[str]:
        return [relative_name(p, self.root) for p in self.files]

    def list_sha256(self) -> str:
        """Hash of the sorted relative file list: names which images were used without listing them."""
        return hash_file_list(self.relative_paths)

    def summary(self) -> dict:
        """What the manifest records about this set."""
        return {
            "root": str(self.root),
            "count": self.count,
            "requested": self.num_requested,
            "available": self.num_available,
            "num_classes": len(self.classes),
            "list_sha256": self.list_sha256(),
            "warnings": list(self.warnings),
        }


def relative_name(path: Path, root: Path) -> str:
    """POSIX path of ``path`` relative to ``root`` (the form hashed and recorded)."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()


def hash_file_list(names: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(names)).encode("utf-8")).hexdigest()


def list_images(root: Path | str, what: str = "calibration") -> list[Path]:
    """All image files under ``root`` (recursively), sorted by relative path.

    Sorting by the relative POSIX path makes the list, and therefore every seeded draw from it,
    independent of the file system's directory order.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{what} folder {root} does not exist",
                        f"pass a folder of images (jpg/png/...) with --{_option(what)}")
    if not root.is_dir():
        raise DataError(f"{what} source {root} is not a folder",
                        "pass a folder of images; sub-folders named after classes are used as labels")
    files = [p for p in root.rglob("*") if p.is_file() and is_image_file(p)]
    if not files:
        anything = any(root.iterdir())
        what_is_there = "contains no image files" if anything else "is empty"
        raise DataError(f"{what} folder {root} {what_is_there}",
                        f"put real images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in it, "
                        "ideally a few hundred from the data the model will see")
    return sorted(files, key=lambda p: relative_name(p, root))


def _option(what: str) -> str:
    return {"calibration": "calib", "verification": "verify-data", "validation": "val-data"}.get(what, what)


def label_of(path: Path, root: Path) -> str | None:
    """Class of one image: its sub-folder name under ``root``, else an ImageNet wnid file-name prefix
    (the data stage's rule, ``data.datasets.folders.image_label``)."""
    from ghostnet_edge.data.datasets.folders import image_label

    return image_label(Path(path), Path(root))


def draw(files: Sequence[Path], n: int, seed: int, exclude: Iterable[Path] = ()) -> list[Path]:
    """A seeded draw of ``n`` files without replacement, skipping ``exclude``; returned sorted.

    The permutation is taken over the sorted candidate list, so it depends only on the file names
    and the seed.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    excluded = {Path(p) for p in exclude}
    candidates = [Path(p) for p in files if Path(p) not in excluded]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(candidates))[: min(n, len(candidates))]
    return sorted((candidates[i] for i in order), key=lambda p: p.as_posix())


def make_image_set(root: Path, files: Sequence[Path], num_requested: int,
                   num_available: int, warnings: Sequence[str] = ()) -> ImageSet:
    return ImageSet(root=root, files=tuple(files), labels=tuple(label_of(p, root) for p in files),
                    num_available=num_available, num_requested=num_requested, warnings=tuple(warnings))


def select_calibration_images(source: Path | str, num: int = DEFAULT_NUM_CALIB, seed: int = 0,
                              exclude: Iterable[Path] = ()) -> ImageSet:
    """Draw ``num`` calibration images from a folder, deterministically by ``seed``.

    ``exclude`` holds the verification images so the two sets never overlap. Fewer images than
    asked for (or than :data:`MIN_RECOMMENDED_CALIB`) gives a warning and goes on; none fails.
    """
    if num < 1:
        raise DataError(f"the number of calibration images must be at least 1 (got {num})",
                        f"pass --num-calib N with N >= 1 ({DEFAULT_NUM_CALIB} is the default)")
    root = Path(source)
    files = list_images(root, "calibration")
    # Resolved paths, so a verification folder given by another spelling still cannot overlap.
    excluded = {Path(p).resolve() for p in exclude}
    usable = [p for p in files if p.resolve() not in excluded]
    if not usable:
        raise DataError(f"calibration folder {root} has no images left after holding out "
                        f"{len(excluded)} for verification",
                        "add images, or pass --verify-data with a separate folder")
    chosen = draw(usable, num, seed)
    return make_image_set(root, chosen, num, len(usable), _size_warnings(len(chosen), num, len(usable), root))


def _size_warnings(count: int, requested: int, available: int, root: Path) -> list[str]:
    warnings = []
    if count < requested:
        warnings.append(f"asked for {requested} calibration images but only {available} are available in "
                        f"{root}; using {count}")
    if count < MIN_RECOMMENDED_CALIB:
        warnings.append(f"only {count} calibration image(s): activation ranges may be poor; "
                        f"{MIN_RECOMMENDED_CALIB}+ real images are recommended ({DEFAULT_NUM_CALIB} is the default)")
    return warnings


def split_calibration_verification(source: Path | str, num_calib: int = DEFAULT_NUM_CALIB,
                                   num_verify: int = DEFAULT_NUM_VERIFY,
                                   seed: int = 0, verify_source: Path | str | None = None,
                                   ) -> tuple[ImageSet, ImageSet]:
    """Draw a held-out verification set and a disjoint calibration set.

    Verification images are drawn first (from ``verify_source`` when given, else from ``source``) so
    that their choice does not depend on ``num_calib``. When both come from one folder that is too
    small for both counts, verification keeps at most half of it and calibration gets the rest.
    """
    if num_verify < 1:
        raise DataError(f"the number of verification images must be at least 1 (got {num_verify})",
                        "pass --num-verify N with N >= 1")
    calib_root = Path(source)
    calib_files = list_images(calib_root, "calibration")
    if verify_source is not None:
        verify_root = Path(verify_source)
        verify_files = list_images(verify_root, "verification")
        n_verify = min(num_verify, len(verify_files))
    else:
        verify_root, verify_files = calib_root, calib_files
        if len(calib_files) < 2:
            raise DataError(f"calibration folder {calib_root} has only {len(calib_files)} image; one is "
                            "needed to calibrate and another, held out, to verify",
                            "add images, or pass --verify-data with a separate folder of images")
        n_verify = min(num_verify, len(calib_files) // 2)
    verify_chosen = draw(verify_files, n_verify, seed + 1)
    v_warn = []
    if n_verify < num_verify:
        v_warn.append(f"verifying on {n_verify} held-out image(s) instead of {num_verify}: the folder is small")
    verify = make_image_set(verify_root, verify_chosen, num_verify, len(verify_files), v_warn)
    calib = select_calibration_images(calib_root, num_calib, seed, exclude=verify_chosen)
    return calib, verify


def extract_tar_images(tar_path: Path | str, dest: Path | str, per_class: int, split: str = "test") -> int:
    """Copy the first ``per_class`` images of each class of ``split`` out of a ``root/split/class/img`` tar.

    Streams the archive and stops at the first member past ``split`` when the tar is ordered by split
    (the CIFAR-10 JPEG tar is), so a few hundred calibration photos cost well under a second instead
    of unpacking all 60,000 files. Returns how many files were written.
    """
    import tarfile

    dest = Path(dest)
    counts: dict[str, int] = {}
    seen_split = False
    try:
        with tarfile.open(tar_path) as tar:
            for member in tar:
                parts = member.name.split("/")
                in_split = len(parts) >= 2 and parts[1] == split
                if seen_split and not in_split and len(parts) >= 2:
                    break
                seen_split = seen_split or in_split
                if not (in_split and len(parts) == 4 and member.isfile() and is_image_file(Path(parts[3]))):
                    continue
                cls = parts[2]
                if counts.get(cls, 0) >= per_class:
                    continue
                counts[cls] = counts.get(cls, 0) + 1
                fh = tar.extractfile(member)
                if fh is None:
                    continue
                (dest / cls).mkdir(parents=True, exist_ok=True)
                (dest / cls / parts[3]).write_bytes(fh.read())
    except (OSError, tarfile.TarError) as exc:
        raise DataError(f"cannot read image archive {tar_path}: {exc}", "pass a readable .tar of images") from exc
    return sum(counts.values())
