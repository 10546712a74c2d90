"""Floor 1, the engine: ``Tensor`` and its graph, primitive ops (each forward beside its
backward), fused functions with hand-derived backward passes, finite-difference checks."""
