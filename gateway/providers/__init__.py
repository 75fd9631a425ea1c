"""Provider adapters: one module per provider, one result shape for all (see `base`)."""
