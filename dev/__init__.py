"""Development only, never in the wheel: stand-ins, synthetic warehouse, demo, benchmarks, soak."""
