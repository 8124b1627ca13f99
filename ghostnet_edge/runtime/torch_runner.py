"""PyTorch eager reference on the host, timed by the device runner's own loop.

    python -m ghostnet_edge.runtime.torch_runner --model CHECKPOINT_OR_NAME [device runner flags]

Same flags, same JSON and progress lines as ``device_runner.py``; only the loader differs, so an
eager PyTorch number and a TFLite number come from the same timed loop and the same statistics.
"""

from __future__ import annotations

import sys

from ghostnet_edge.runtime import device_runner as dr


class TorchModel(dr.Model):
    """An ``nn.Module`` in eval mode behind the runner's Model interface (NCHW float32 input)."""

    def __init__(self, spec: str, threads: int) -> None:
        import torch

        from ghostnet_edge.errors import GhostEdgeError
        from ghostnet_edge.models.checkpoint import load_model

        torch.set_num_threads(threads)
        try:
            model, model_spec, _meta = load_model(spec)
        except GhostEdgeError as exc:
            raise dr.RunnerError(exc.message, exc.hint or "") from exc
        self.module = model.eval()
        self.torch = torch
        self.runtime, self.version, self.delegate = "torch", torch.__version__.split("+")[0], "none"
        self.input_shape = [1, *[int(v) for v in model_spec.input_size]]
        self.layout = "NCHW"
        self.batch_fixed = False  # eager modules take any batch
        self.x = None
        self.y = None

    def set_input(self, native) -> None:
        # A read-only array (cached image tensors are mapped read-only) is copied: from_numpy needs writable.
        self.x = self.torch.from_numpy(native if native.flags.writeable else native.copy())

    def invoke(self) -> None:
        with self.torch.inference_mode():
            self.y = self.module(self.x)

    def outputs(self):
        return self.y.detach().float().numpy()


def load_torch(spec: str, runtime: str, threads: int, xnnpack: bool) -> TorchModel:
    """The runner's loader signature; ``xnnpack`` does not apply to eager PyTorch."""
    if runtime not in ("auto", "torch"):
        raise dr.RunnerError(f"runtime {runtime} cannot run a PyTorch model", "use --runtime auto (or torch)")
    return TorchModel(spec, threads)


def main(argv: list[str] | None = None) -> int:
    # Interop threads must be fixed before the first parallel op; one, like the paper's measurements.
    import torch

    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process
    return dr.main(argv, loader=load_torch)


if __name__ == "__main__":
    sys.exit(main())
