"""How ``ghostedge export``'s process imports PyTorch: without running the Python meta kernels it never uses.

``import torch`` ends with ``torch._meta_registrations``: the Python "meta" kernels that compute output
shapes for fake tensors (``torch.compile``, ``torch.export``), together with the decomposition and
reference-op modules they are written in: PyTorch's import took 1.28 s with them and 0.98 s without
(best of 3, ``benchmarks/export_parts.py`` on the project's AMD EPYC, ``docs/results/export_parts_amd.md``),
and that import sits on the export's critical path: the main process imports PyTorch, loads the
model and exports ONNX while the TFLite converter process takes the other core. An export never runs a meta kernel: it builds the model, runs it on real tensors and
exports it with the TorchScript-based ONNX exporter (``export/onnx/convert.py``), which traces real
tensors too.

:func:`defer_meta_kernels` makes the coming ``import torch`` create that module without running it. Its
code runs, whole, the first time anything reads a name from it, so a caller that does need the meta
kernels by name gets them. What it cannot catch is code that relies on the registrations without
naming the module (tracing with fake tensors), which is why only the ``ghostedge export`` command
installs it, in a process that ends with the export; ``export_artifacts`` called from a user's own
Python leaves PyTorch alone. ``tests/test_export_onnx.py`` checks that the exported ONNX file is the
same bytes with and without it, and that the module is still not run once the ONNX file is written.
"""

from __future__ import annotations

import importlib.machinery
import sys
import threading
import types
from typing import Any

# The modules a ``ghostedge export`` process creates but does not run until a name in one is read.
DEFERRED_MODULES = ("torch._meta_registrations",)

_LOCK = threading.RLock()


class DeferredModule(types.ModuleType):
    """A module whose code has not run yet: the first read of a name that is not there runs it.

    The attributes the import system sets (``__name__``, ``__file__``, ``__spec__``, ...) are in the
    module's dictionary, so reading those (``inspect.getmodule`` reads every module's ``__file__``)
    does not run it, unlike ``importlib.util.LazyLoader``, which runs a module on any attribute read.
    """

    def __getattr__(self, name: str) -> Any:
        with _LOCK:  # one thread runs the module; another one reading it meanwhile waits for the result
            if type(self) is DeferredModule and not self.__dict__.get("_ghostedge_running"):
                self.__dict__["_ghostedge_running"] = True
                try:
                    self.__spec__.loader.real_loader.exec_module(self)
                finally:
                    del self.__dict__["_ghostedge_running"]
                self.__class__ = types.ModuleType
            elif type(self) is DeferredModule:  # read while its own code runs: not there yet
                raise AttributeError(f"partially initialized module {self.__name__!r} has no attribute {name!r}")
        return getattr(self, name)


class _DeferringLoader:
    def __init__(self, real_loader: Any) -> None:
        self.real_loader = real_loader

    def create_module(self, spec: Any) -> None:
        return None  # the default module, whose class exec_module then swaps

    def exec_module(self, module: types.ModuleType) -> None:
        module.__class__ = DeferredModule


class DeferModules:
    """Import hook: the named modules are created on import and run on first use."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = frozenset(names)

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _DeferringLoader(spec.loader)
        return spec


def is_deferred(name: str) -> bool:
    """Whether module ``name`` is imported but its code has not run yet."""
    return type(sys.modules.get(name)) is DeferredModule


def defer_meta_kernels() -> bool:
    """Defer ``torch._meta_registrations`` in this process; False, and nothing done, once PyTorch is imported."""
    if "torch" in sys.modules:
        return False
    if not any(isinstance(f, DeferModules) for f in sys.meta_path):
        sys.meta_path.insert(0, DeferModules(DEFERRED_MODULES))
    return True
