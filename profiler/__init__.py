"""Hardware measurement: per-layer latency lookup tables (LUTs) and the latency model built on them."""
