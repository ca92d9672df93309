"""edgeprof: what each format, precision and pruning choice costs and buys on an edge device."""
__version__ = "0.1.0"
