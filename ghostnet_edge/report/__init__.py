"""The accuracy-vs-latency curve's outputs: points and tables (``points``), plots (``plot``), the
curve's files (``curve``) and the paper's published numbers (``paper``). The sweep that measures the
points is ``pipeline.curve`` (its calls into the other stages are ``pipeline.stages``); nothing here
imports from ``pipeline``.

Nothing is imported here so ``import ghostnet_edge.report.paper`` stays light.
"""
