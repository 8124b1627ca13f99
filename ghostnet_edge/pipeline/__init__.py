"""End-to-end jobs built from the stages: ``curve`` is the accuracy-vs-latency sweep, ``quickstart`` is
the README's main job (a small ``curve``) and ``calibration_draws`` is INT8 over calibration draws.
``stages`` holds the sweep's calls into training, export, evaluation and the runtime; the curve's
tables, points, plots and files are written by ``ghostnet_edge.report``."""
