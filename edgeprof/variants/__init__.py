"""Variants: identity (hash of parent, pass, config, tool versions), the cache and lineage."""
from .cache import Cache, Variant, cache_root, variant_id

__all__ = ["Cache", "Variant", "cache_root", "variant_id"]
