"""Distributed training context: one process per rank, gloo on CPU, set up from torchrun's environment.

``torchrun --nproc-per-node 2 -m ghostnet_edge train ...`` sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/
``MASTER_PORT``; without them everything runs as a single process with no process group.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from ghostnet_edge.errors import GhostEdgeError


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> DistContext:
        """Join the process group torchrun describes (gloo), or a single-process context."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), owns_group=False)
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return cls()
        if not dist.is_available():  # pragma: no cover - every CPU wheel has it
            raise GhostEdgeError("this torch build has no torch.distributed", "run without torchrun")
        try:
            dist.init_process_group("gloo", init_method="env://")
        except (RuntimeError, ValueError, KeyError) as exc:
            raise GhostEdgeError(f"cannot join the distributed run: {exc}",
                                 "launch with torchrun (it sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)") from exc
        return cls(dist.get_rank(), dist.get_world_size(), owns_group=True)

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def sum(self, values: Sequence[float]) -> list[float]:
        """Sum ``values`` over ranks (float64, so counts stay exact)."""
        if not self.active:
            return [float(v) for v in values]
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False
