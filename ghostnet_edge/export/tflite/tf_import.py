"""How the TFLite converter process imports TensorFlow: without what a conversion never uses.

``import tensorflow`` takes seconds on the 2-core machine an export runs on, from the core the export's
main process needs. Two import hooks of the converter process (``export/tflite/worker.py``) cut it,
without changing a converted byte (``tests/test_export_tflite.py`` converts in a process with and one
without them; ``benchmarks/export_parts.py`` times the import both ways):

* :class:`NotLoaded` (``keras``, ``scipy``): TensorFlow loads Keras 3 eagerly, only to register Keras
  optimizers for loading Keras SavedModels, and Keras brings scikit-learn, matplotlib and SciPy's
  statistics. The converter translates ONNX into TensorFlow ops and never builds or loads a Keras model,
  and TensorFlow treats a Keras that fails to import as absent. ``tf.nn`` names the RNN cell wrappers of
  TensorFlow's own legacy Keras, whose training loop imports ``scipy.sparse`` only to accept SciPy sparse
  matrices as training data, and treats a SciPy that fails to import as absent; nothing else in the
  converter process imports SciPy. TensorFlow's import plus ``tf.nn``: 2.11 s with SciPy, 1.88 s without
  (best of 3, ``benchmarks/export_parts.py`` on the project's AMD EPYC).
* :class:`LazyApiNamespaces`: ``tensorflow/__init__.py`` imports every public namespace module
  (``tf.distribute``, ``tf.feature_column``, ``tf.compat.v1``, ``tf.__internal__``, ...), and each one
  imports the implementation modules behind its names. Here each namespace module is created when
  imported but run only when one of its names is first read (``importlib.util.LazyLoader``), so only
  the namespaces the translator and the converter read are ever loaded. A namespace named like one of
  TensorFlow's own subpackages (``tf.lite``: ``tensorflow/lite``) is loaded as usual: importing that
  subpackage later would replace the lazy module in ``tensorflow``'s namespace with the subpackage.
  The namespace every translation reads (``tf.nn``) is loaded while the converter process waits for
  its first job (:func:`load_translation_namespaces`).

Lazy modules are not safe to first read from two threads at once in Python 3.11; the converter
process has one thread, and the hooks are only ever installed there.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from typing import Any

_API_PREFIX = "tensorflow._api.v2."


# The top-level packages the converter process finds but never loads (see the module docstring).
NOT_LOADED = ("keras", "scipy")


class NotLoaded:
    """Import hook: the named top-level packages are found but not loaded: importing one raises
    ImportError. The spec keeps its real location, because TensorFlow builds its ``tf.keras`` search path
    from Keras's without importing it."""

    def __init__(self, names: tuple[str, ...] = NOT_LOADED) -> None:
        self.names = frozenset(names)

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None:
            spec.loader = self  # type: ignore[assignment]
        return spec

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: Any) -> None:
        raise ImportError(f"{module.__name__} is not loaded in the TFLite converter process", name=module.__name__)


class LazyApiNamespaces:
    """Import hook: TensorFlow's public namespace modules (``tensorflow._api.v2.*``) run on first use."""

    def __init__(self) -> None:
        self._own_packages: set[str] | None = None

    def _is_own_package(self, top: str) -> bool:
        """Whether ``tensorflow.<top>`` is also a real subpackage or module of TensorFlow."""
        if self._own_packages is None:
            tf = sys.modules.get("tensorflow")
            roots = [Path(p) for p in getattr(tf, "__path__", [])] if tf is not None else []
            self._own_packages = {p.stem for root in roots if root.is_dir() for p in root.iterdir()
                                  if not p.name.startswith("_")}
        return top in self._own_packages

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if not name.startswith(_API_PREFIX) or self._is_own_package(name[len(_API_PREFIX):].split(".")[0]):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


# Namespaces every translation reads (convolutions, activations, pooling): loaded by
# :func:`load_translation_namespaces` while the converter process waits for its first job.
TRANSLATION_NAMESPACES = ("nn",)


def load_translation_namespaces() -> None:
    """Run the lazy namespaces every translation reads now (TensorFlow imported), not at the first job."""
    tf = sys.modules.get("tensorflow")
    for name in TRANSLATION_NAMESPACES if tf is not None else ():
        getattr(getattr(tf, name, None), "__name__", None)  # reading a name runs a lazy module


def install_import_hooks() -> None:
    """Put both hooks first on ``sys.meta_path`` (before TensorFlow is imported; once per process)."""
    if not any(isinstance(f, (NotLoaded, LazyApiNamespaces)) for f in sys.meta_path):
        sys.meta_path[:0] = [NotLoaded(), LazyApiNamespaces()]
