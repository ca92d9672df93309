"""Passes turn a model into a new model: quantize, convert, prune. One module each; every output is
a cached variant whose id hashes (parent, pass, config, tool versions)."""
