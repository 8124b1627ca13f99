"""End-to-end jobs built from the stages: ``curve`` is the accuracy-vs-latency sweep, ``quickstart`` is
the README's main job (a small ``curve``) and ``calibration_draws`` is INT8 over calibration draws."""
