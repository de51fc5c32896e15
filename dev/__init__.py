"""Development only (never shipped in the wheel): stand-ins, the synthetic warehouse, the demo, benchmarks, soak."""
