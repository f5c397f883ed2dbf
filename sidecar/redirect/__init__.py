"""Traffic capture for the init container; not built yet."""
