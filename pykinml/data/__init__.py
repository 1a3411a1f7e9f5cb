"""From the database to training batches: the precompute stage and its memory-mapped AEV cache."""

from pykinml.data.cache import AEVCache, CachedBatch, cache_root, clear_caches, list_caches
from pykinml.data.precompute import precompute

__all__ = ["AEVCache", "CachedBatch", "cache_root", "clear_caches", "list_caches", "precompute"]
