"""Checkpoints: save atomically, load without running code, rebuild the model they belong to.

Format (docs/ARCHITECTURE.md): ``torch.save({"state_dict", "meta", "extra"})`` or a ``.safetensors`` file
whose metadata holds ``meta``/``extra`` as JSON. Loading always goes through ``torch.load(weights_only=True)``
or safetensors, which cannot execute code: a checkpoint downloaded from the internet is data, never a
program. Foreign layouts load too: a bare ``state_dict`` (the published GhostNet ``state_dict_73.98.pth``,
timm and torchvision files), ``{"state_dict"|"model"|"state_dict_ema": ...}`` wrappers and ``module.``
(DDP) or ``_orig_mod.`` (torch.compile) key prefixes.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ghostnet_edge.errors import CheckpointError, GhostEdgeError, ModelError
from ghostnet_edge.models.ghostnet import ghost_arch_of
from ghostnet_edge.models.layers import make_divisible
from ghostnet_edge.models.registry import (
    ARCHS,
    ModelSpec,
    build_model,
    format_model_name,
    get_spec,
    list_models,
    parse_model_name,
)
from ghostnet_edge.models.reparam import state_dict_form
from ghostnet_edge.utils.atomic import atomic_write_bytes
from ghostnet_edge.utils.versions import package_versions

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".pth.tar", ".ckpt", ".bin", ".safetensors")
META_KEYS = ("arch", "model", "width", "num_classes", "input_size", "mean", "std", "resize_size",
             "interpolation", "class_names", "seed", "epochs_done", "epochs_total", "accuracy", "versions")
_WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema")
_PREFIXES = ("module.", "_orig_mod.")
MAX_LISTED_MISMATCHES = 5


@dataclass
class Checkpoint:
    """What a checkpoint file holds, after unwrapping."""

    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


# --------------------------------------------------------------------------------------------- saving

def spec_meta(spec: ModelSpec) -> dict[str, Any]:
    """The ``meta`` fields a :class:`ModelSpec` determines (JSON-friendly: tuples become lists)."""
    return {"arch": spec.arch, "model": spec.name, "width": spec.width, "num_classes": spec.num_classes,
            "input_size": list(spec.input_size), "mean": list(spec.mean), "std": list(spec.std),
            "resize_size": spec.resize_size, "interpolation": spec.interpolation,
            "stem_stride": spec.stem_stride, "dropout": spec.dropout}


def build_meta(spec: ModelSpec | None, meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """Complete ``meta``: every documented key present, spec fields filled in, the caller's values on top."""
    out: dict[str, Any] = {k: None for k in META_KEYS}
    if spec is not None:
        out.update(spec_meta(spec))
    out.update(dict(meta or {}))
    out["versions"] = package_versions()
    return out


def save_checkpoint(path: Path | str, model: nn.Module | Mapping[str, torch.Tensor], meta: Mapping[str, Any],
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model``'s weights with ``meta`` (+ ``extra``, e.g. optimizer state) to ``path``, atomically.

    A ``.safetensors`` suffix writes safetensors (``extra`` must then be JSON-serialisable); anything else
    writes ``torch.save``. The bytes are made in memory and written with ``atomic_write_bytes`` (temporary
    file, fsync, rename), so the file appears complete or not at all.
    """
    path = Path(path)
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    spec = getattr(model, "spec", None)
    full_meta = build_meta(spec if isinstance(spec, ModelSpec) else None, meta)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    extra = dict(extra or {})
    if path.suffix == ".safetensors":
        from safetensors.torch import save as safetensors_bytes

        try:
            metadata = {"ghostedge_meta": json.dumps(full_meta), "ghostedge_extra": json.dumps(extra)}
        except TypeError as exc:
            raise CheckpointError(f"cannot store meta/extra in {path.name}: {exc}",
                                  "safetensors metadata must be JSON (numbers, strings, lists, dicts); "
                                  "save to a .pt file to keep tensors such as optimizer state") from exc
        # clone(): safetensors refuses tensors that share storage (tied weights), copies never do
        data = safetensors_bytes({k: v.clone() for k, v in tensors.items()}, metadata=metadata)
    else:
        buffer = io.BytesIO()
        torch.save({"state_dict": tensors, "meta": full_meta, "extra": extra}, buffer)
        data = buffer.getvalue()
    return atomic_write_bytes(path, data)


# -------------------------------------------------------------------------------------------- loading

def sniff_format(head: bytes) -> str:
    """``"torch-zip"``, ``"torch-legacy"``, ``"safetensors"`` or ``"unknown"`` from a file's first 16 bytes."""
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if head.startswith(b"\x80") and len(head) >= 2 and head[1] in (2, 3, 4, 5):
        return "torch-legacy"      # a pickle stream: torch.save's pre-1.6 format
    if len(head) >= 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if 0 < header_len < 100_000_000:
            return "safetensors"
    return "unknown"


# Callables in a pickle that exist to run commands or code: a file naming one of them is an attack or a
# trap, not a checkpoint that merely holds an unusual object.
_CODE_RUNNERS = re.compile(r"\b(?:posix|nt|os|subprocess|builtins|__builtin__|runpy|pty|commands|shutil|"
                           r"importlib|socket)\.\w+|\b(?:eval|exec|compile|__import__|system|popen)\b", re.I)


def _refused(path: Path, message: str) -> CheckpointError:
    """The error for a pickle that a weights-only load refused, whatever words torch used for it."""
    found = re.search(r"GLOBAL ([\w.]+)", message, re.I) or re.search(r"global '?([\w.]+)", message, re.I)
    name = found.group(1) if found else None
    if name and _CODE_RUNNERS.search(name):
        return CheckpointError(
            f"refused to load {path}: it tries to run code ({name}) when unpickled; it was not executed",
            "do not use this file: it is not a plain checkpoint; ask its author for a .safetensors or "
            "state_dict file")
    what = f" (it references {name})" if name else ""
    return CheckpointError(
        f"refused to load {path}: it contains Python objects other than tensors{what}, "
        "and unpickling them could run arbitrary code",
        "load only files saved as state_dicts; if you trust the file, re-save it elsewhere with "
        "torch.save(torch.load(f, weights_only=False)['state_dict'], 'clean.pt')")


def _read_raw(path: Path) -> tuple[Any, dict[str, Any] | None]:
    """Load the file's object (torch) or tensors + metadata (safetensors) without executing code."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    kind = sniff_format(head)
    corrupt_hint = "the file is truncated or damaged; copy or download it again, or re-run the training"
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty", corrupt_hint)
    if kind == "unknown":
        raise CheckpointError(f"{path} is not a checkpoint (neither a torch.save file nor safetensors)",
                              "pass a .pt/.pth file written by torch.save or a .safetensors file")
    if kind == "safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                metadata = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception as exc:  # safetensors raises its own SafetensorError and plain OSErrors
            raise CheckpointError(f"cannot read safetensors checkpoint {path}: {exc}", corrupt_hint) from exc
        return tensors, metadata
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's wording changes between releases ("Unsupported global: GLOBAL x", "Trying to load
        # unsupported GLOBAL x whose module y is blocked"): look for what it refused, not for a phrase.
        text = str(exc)
        if re.search(r"unsupported global|is blocked|weights only load failed", text, re.I):
            raise _refused(path, text) from None
        raise CheckpointError(f"cannot read checkpoint {path}: the data is not a valid torch.save stream",
                              corrupt_hint) from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError) as exc:
        reason = str(exc).split(".")[0] or type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {reason}", corrupt_hint) from None
    return obj, None


def strip_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop ``module.`` (DDP/DataParallel) and ``_orig_mod.`` (torch.compile) prefixes shared by every key."""
    sd = dict(state_dict)
    changed = True
    while changed and sd:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                changed = True
    return sd


def unwrap_state_dict(obj: Any, use_ema: bool = False) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Find the ``state_dict`` in what ``torch.load`` returned; return it with ``meta`` and ``extra``.

    ``use_ema`` prefers ``state_dict_ema`` (timm's averaged weights) when a file has both.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"not a checkpoint: the file holds a {type(obj).__name__}, not a dict of tensors",
                              "save checkpoints with torch.save(model.state_dict(), path) or ghostedge train")
    meta = obj.get("meta") if isinstance(obj.get("meta"), Mapping) else {}
    extra = obj.get("extra") if isinstance(obj.get("extra"), Mapping) else {}
    order = ("state_dict_ema", *_WRAPPER_KEYS) if use_ema else _WRAPPER_KEYS
    inner: Any = obj
    for key in order:
        if isinstance(obj.get(key), Mapping):
            inner = obj[key]
            break
    state = {k: v for k, v in inner.items() if isinstance(v, torch.Tensor)}
    if not state or any(not isinstance(k, str) for k in state):
        raise CheckpointError("not a checkpoint: no named tensors found",
                              f"expected a state_dict, or a dict with one of {', '.join(_WRAPPER_KEYS)}")
    dropped = [k for k, v in inner.items() if not isinstance(v, torch.Tensor)]
    if dropped and inner is not obj:
        raise CheckpointError(f"not a checkpoint: the state_dict has non-tensor entries ({', '.join(dropped[:3])})",
                              "re-save it with torch.save(model.state_dict(), path)")
    return strip_prefixes(state), dict(meta), dict(extra)


def load_checkpoint(path: Path | str, use_ema: bool = False) -> Checkpoint:
    """Read a checkpoint safely; raise :class:`CheckpointError` for a missing, corrupt or unsafe file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist",
                              "check the path, or pass a model name such as ghostnet_100 for random weights")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file", "pass the .pt/.safetensors file inside it")
    obj, st_meta = _read_raw(path)
    if st_meta is not None:
        try:
            meta = json.loads(st_meta.get("ghostedge_meta", "{}"))
            extra = json.loads(st_meta.get("ghostedge_extra", "{}"))
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}: the ghostedge metadata is not valid JSON ({exc})",
                                  "the file was edited or damaged; re-save it") from None
        state, _, _ = unwrap_state_dict(obj)
        return Checkpoint(state, meta if isinstance(meta, dict) else {}, extra if isinstance(extra, dict) else {},
                          path)
    state, meta, extra = unwrap_state_dict(obj, use_ema=use_ema)
    return Checkpoint(state, meta, extra, path)


# ----------------------------------------------------------------------------- what a state_dict is

def _shape(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    v = sd.get(key)
    return tuple(v.shape) if isinstance(v, torch.Tensor) else None


def _closest_width(channels: int, base: int, divisor: int, also: tuple[int, int] | None = None) -> float | None:
    """The width w (2 decimals) with make_divisible(base*w, divisor) == channels, nearest channels/base."""
    approx = channels / base
    candidates = [round(approx + d / 100, 2) for d in range(-5, 6)]
    fits = [w for w in candidates if w > 0 and make_divisible(base * w, divisor) == channels
            and (also is None or make_divisible(also[0] * w, divisor) == also[1])]
    return min(fits, key=lambda w: abs(w - approx)) if fits else None


def infer_architecture(sd: Mapping[str, torch.Tensor]) -> tuple[str, int] | None:
    """Guess (model name, num_classes) of a bare state_dict from its key layout and a few shapes.

    The 32x32 forms differ from the ImageNet forms only in the stem's stride, which leaves no trace in
    the weights, so a bare GhostNet/MobileNet state_dict is reported as the ImageNet form (checkpoints
    written by :func:`save_checkpoint` say which form they are in their meta).
    """
    if (stem := _shape(sd, "conv_stem.weight")) and (last := _shape(sd, "blocks.9.0.conv.weight")) \
            and (cls := _shape(sd, "classifier.weight")):
        width = _closest_width(last[0], 960, 4, also=(16, stem[0]))
        return (format_model_name(ghost_arch_of(sd), width), cls[0]) if width else None
    feats = {int(m.group(1)) for k in sd if (m := re.match(r"features\.(\d+)\.", k))}
    if "features.1.block.0.0.weight" in sd and (cls := _shape(sd, "classifier.3.weight")):
        variant, base = ("large", 160) if max(feats) >= 16 else ("small", 96)
        last = _shape(sd, f"features.{max(feats)}.0.weight")
        width = _closest_width(last[0] // 6, base, 8) if last else None
        return (format_model_name(f"mobilenetv3_{variant}", width), cls[0]) if width else None
    if "features.1.conv.0.0.weight" in sd and (cls := _shape(sd, "classifier.1.weight")):
        last = _shape(sd, "features.17.conv.2.weight")
        width = _closest_width(last[0], 320, 8) if last else None
        return (format_model_name("mobilenetv2", width), cls[0]) if width else None
    plugin = {"features.0.weight": "vgg16", "layer1.0.conv1.weight": "resnet56"}
    for key, arch in plugin.items():
        cls = _shape(sd, "classifier.3.weight") or _shape(sd, "fc.weight")
        if key in sd and cls:
            return format_model_name(arch), cls[0]
        ghost_key = key.replace(".weight", ".primary_conv.0.weight")
        if ghost_key in sd and cls:
            init = _shape(sd, ghost_key)[0]
            out = 64 if arch == "vgg16" else 16
            ratio = next((s for s in range(2, out + 1) if math.ceil(out / s) == init), 2)
            dw = (_shape(sd, ghost_key.replace("primary_conv", "cheap_operation")) or (0, 0, 3))[2]
            return format_model_name(f"ghost_{arch}", ratio=ratio, dw_size=dw), cls[0]
    return None


def _fmt_shape(shape: tuple[int, ...] | None) -> str:
    return "[" + ",".join(str(s) for s in shape) + "]" if shape is not None else "-"


def state_dict_mismatches(checkpoint: Mapping[str, torch.Tensor], model: Mapping[str, torch.Tensor]) -> list[str]:
    """One line per key that is missing, unexpected or of another shape.

    Conv/linear weights (2+ dims) come first, in the model's key order: they say what differs (channels,
    kernel, classes), while the BN vectors beside them only repeat it.
    """
    lines: list[tuple[bool, str]] = []
    for key, value in model.items():
        if key not in checkpoint:
            lines.append((value.dim() < 2, f"{key}: missing from checkpoint (model {_fmt_shape(tuple(value.shape))})"))
        elif tuple(checkpoint[key].shape) != tuple(value.shape):
            lines.append((value.dim() < 2, f"{key}: checkpoint {_fmt_shape(tuple(checkpoint[key].shape))} "
                                           f"vs model {_fmt_shape(tuple(value.shape))}"))
    lines += [(v.dim() < 2, f"{key}: not in model (checkpoint {_fmt_shape(tuple(v.shape))})")
              for key, v in checkpoint.items() if key not in model]
    return [text for _, text in sorted(lines, key=lambda item: item[0])]


# ------------------------------------------------------------------------------------ load_model

def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.lower().endswith(CHECKPOINT_SUFFIXES)


def _spec_overrides_from_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("input_size", "mean", "std", "resize_size", "interpolation", "stem_stride", "dropout")
    return {k: meta[k] for k in keys if meta.get(k) is not None}


def _resolve_name(arch: str | None, width: float | None, meta: Mapping[str, Any],
                  inferred: tuple[str, int] | None, path: Path) -> str:
    """The model name to build: ``arch`` > the checkpoint's meta > the key layout; ``width`` on top."""
    if arch:
        name = arch.strip().lower()
        if name in ARCHS and ARCHS[name].has_width and width is None:
            # A bare architecture: take the width from meta or the weights when they are that architecture.
            if meta.get("arch") == name and meta.get("model"):
                name = str(meta["model"])
            elif inferred and parse_model_name(inferred[0]).arch == name:
                name = inferred[0]
    elif meta.get("model"):
        name = str(meta["model"])
    elif inferred:
        name = inferred[0]
    else:
        raise CheckpointError(f"cannot tell which network {path} belongs to: it has no ghostedge meta and an "
                              "unknown key layout",
                              f"pass the model name, e.g. --model ghostnet_100 (known: {', '.join(list_models())})")
    return get_spec(name, width=width).name


def load_model(path_or_name: Path | str, num_classes: int | None = None, arch: str | None = None,
               width: float | None = None) -> tuple[nn.Module, ModelSpec, dict[str, Any]]:
    """Build the model a checkpoint (or a model name) describes and load its weights strictly.

    The architecture comes from ``arch`` (a name like ``ghostnet_050``, or an architecture like
    ``ghostnet``), else the checkpoint's meta, else the key layout (official GhostNet and torchvision
    MobileNet state_dicts); ``width`` overrides the width. Classes come from ``num_classes``, meta or the
    classifier's shape. The input size and normalisation stored in meta are kept. A model name instead of
    a path gives that model with fresh random weights and empty meta. Returns the model in eval mode
    with ``model.spec`` set.
    """
    text = str(path_or_name)
    path = Path(text).expanduser()
    if not path.exists() and not _looks_like_path(text):
        try:
            spec = get_spec(text, num_classes=num_classes, width=width)
        except ModelError as exc:
            raise ModelError(f"{text!r} is neither a checkpoint file nor a model name ({exc.message})",
                             exc.hint) from None
        model = build_model(spec)
        model.spec = spec
        return model.eval(), spec, {}
    ckpt = load_checkpoint(path)
    sd, meta = ckpt.state_dict, dict(ckpt.meta)
    inferred = infer_architecture(sd)
    name = _resolve_name(arch, width, meta, inferred, path)
    # Input size and normalisation describe how the weights were trained: keep them for the same model.
    overrides = _spec_overrides_from_meta(meta) if name == meta.get("model") else {}
    if num_classes is None:
        num_classes = meta.get("num_classes") or (inferred[1] if inferred else None)
    try:
        spec = get_spec(name, num_classes=num_classes, **overrides)
    except GhostEdgeError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc.message}", exc.hint) from None
    # GhostNetV3/RepGhostNet checkpoints come trained (with branches) or folded: build the form they hold.
    model = build_model(spec, reparameterized=state_dict_form(sd) == "reparameterized")
    problems = state_dict_mismatches(sd, model.state_dict())
    if problems:
        shown = "; ".join(problems[:MAX_LISTED_MISMATCHES])
        more = f"; and {len(problems) - MAX_LISTED_MISMATCHES} more" if len(problems) > MAX_LISTED_MISMATCHES else ""
        raise CheckpointError(f"checkpoint {path} does not fit {spec.name} with {spec.num_classes} classes: "
                              f"{len(problems)} mismatched keys (first: {shown}{more})",
                              _mismatch_hint(spec, inferred, meta, problems))
    check_finite(sd, path)
    model.load_state_dict(sd, strict=True)
    model.spec = spec
    return model.eval(), spec, meta


def check_finite(sd: Mapping[str, torch.Tensor], path: Path | str) -> None:
    """Refuse weights holding NaN or Inf (a diverged training), before any conversion is blamed for them."""
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint {path} has NaN or infinite values in {len(bad)} tensors "
                              f"(first: {', '.join(bad[:3])}): the training that wrote it diverged",
                              "use an earlier checkpoint (best.pt), or retrain with a lower --lr")


def _mismatch_hint(spec: ModelSpec, inferred: tuple[str, int] | None, meta: Mapping[str, Any],
                   problems: Sequence[str] = ()) -> str:
    # The classifier's shape in the weights is the truth about the class count; meta can be stale.
    classes_in_weights = inferred[1] if inferred else 0
    truth = ((str(meta["model"]), int(classes_in_weights or meta.get("num_classes") or 0)) if meta.get("model")
             else inferred)
    only_head = bool(problems) and all(p.split(":")[0].startswith(("classifier", "fc.", "head")) for p in problems)
    if truth is None:
        if only_head:
            return "only the classifier differs: the checkpoint has another number of classes; pass --num-classes"
        return "pass the model name the checkpoint was trained with, e.g. --model ghostnet_100"
    name, classes = truth
    if name == spec.name and classes and classes != spec.num_classes:
        return f"this checkpoint has {classes} classes; pass --num-classes {classes} (or leave it out)"
    if name != spec.name:
        return f"this checkpoint is {name} ({classes} classes), pass --model {name}"
    if only_head:
        return "only the classifier differs: the checkpoint was trained for another number of classes"
    return "the checkpoint was saved from a different version of this network; re-export or retrain it"
