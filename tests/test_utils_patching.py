"""``utils.patching.swapped``: the replacements hold inside the block, and every original comes back."""

from __future__ import annotations

import types

import pytest

from ghostnet_edge.utils.patching import swapped


def test_swapped_replaces_inside_and_restores_after_an_error() -> None:
    first, second = types.SimpleNamespace(f=len), types.SimpleNamespace(g=abs)
    with swapped((first, "f", max), (second, "g", min)):
        assert first.f is max and second.g is min
    assert first.f is len and second.g is abs
    with pytest.raises(RuntimeError), swapped((first, "f", max)):
        raise RuntimeError("inside")
    assert first.f is len
    with pytest.raises(AttributeError), swapped((first, "f", max), (second, "missing", min)):
        pass
    assert first.f is len  # nothing was replaced: the missing original was found before any swap
