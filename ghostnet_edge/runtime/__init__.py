"""Latency and accuracy of artifacts on the host, emulated ARM, ssh boards and adb phones.

- ``device_runner.py``  the self-contained timing script copied to devices (stdlib + NumPy + one
                        interpreter); ``torch_runner.py`` runs PyTorch eager models through its loop
- ``protocol.py``       the host side of that script: flags, streaming, partial results
- ``stats.py``          percentiles, mean, std, CV, the noisy flag (pure functions)
- ``artifacts.py``      what a file is: format, precision, model name, preprocessing
- ``backends/``         ``load_runner(artifact)``: in-process inference for evaluation
- ``config.py``         ``BenchConfig`` (what to measure) and ``BenchResult`` (what was measured)
- ``bench.py``          ``bench(artifacts, target, config)``
- ``evaluate.py``       ``evaluate_artifact(artifact, data, ...)``: top-1/top-5 and agreement
- ``targets/``          ``parse_target``: host, ssh://..., adb[:serial], qemu-aarch64[:cpu]

Nothing heavy is imported here; the CLI imports these modules inside its command bodies.
"""
