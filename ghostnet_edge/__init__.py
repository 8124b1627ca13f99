"""ghostedge: GhostNet from PyTorch to phones and ARM boards.

Stages live in their own sub-packages:
- ``models``   the networks as tables of block configs, and the named variants
- ``data``     image decoding, the one preprocessing implementation, datasets from disk
- ``train``    seeded, resumable training and the spread over seeds
- ``calib``    choosing and caching the images INT8 calibration sees
- ``export``   ONNX and TFLite, FP32 and INT8, each artifact verified before it is written
- ``runtime``  latency and accuracy of artifacts on the host, emulated ARM, ssh boards, adb phones
- ``report``   the accuracy-vs-latency curve, tables and plots
- ``cli``      the thin typer command line

Nothing heavy is imported here: ``ghostedge --help`` must start in well under a second.
"""

__version__ = "0.1.0"
