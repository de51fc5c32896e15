"""The `recipes` command: demo, serve, operate the inbox, run the benchmarks."""
