"""The accuracy-vs-latency curve's outputs: points and tables (``points``), plots (``plot``), the
curve's files (``curve``) and the paper's published numbers (``paper``). The sweep that measures the
points is ``pipeline.curve``; ``stages`` holds its calls into the other stages.

Nothing is imported here so ``import ghostnet_edge.report.paper`` stays light.
"""
