"""The accuracy-vs-latency curve: sweep (``curve``), spread over seeds (``spread``), tables
(``points``), plots (``plot``) and the paper's published numbers (``paper``).

Nothing is imported here so ``import ghostnet_edge.report.paper`` stays light.
"""
