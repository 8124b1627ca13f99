"""The networks (as tables of block configs), named variants, profiling and checkpoints.

``from ghostnet_edge.models import create_model, get_spec`` is cheap: the registry imports torch only
when a model is built; ``count_params``/``profile_macs``/checkpoint functions are loaded on first use.
"""

from __future__ import annotations

from typing import Any

from ghostnet_edge.models.registry import (
    ModelSpec,
    check_input_size,
    create_model,
    get_spec,
    list_models,
    parse_model_name,
)

_LAZY = {
    "count_params": "ghostnet_edge.models.profile",
    "profile_macs": "ghostnet_edge.models.profile",
    "MacsReport": "ghostnet_edge.models.profile",
    "Checkpoint": "ghostnet_edge.models.checkpoint",
    "save_checkpoint": "ghostnet_edge.models.checkpoint",
    "load_checkpoint": "ghostnet_edge.models.checkpoint",
    "load_model": "ghostnet_edge.models.checkpoint",
    "ghostify": "ghostnet_edge.models.ghost_plugin",
    "reparameterize": "ghostnet_edge.models.reparam",
}

__all__ = ["ModelSpec", "check_input_size", "create_model", "get_spec", "list_models", "parse_model_name",
           *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
