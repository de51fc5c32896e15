"""Local stand-ins of Iterable and Marketo and the synthetic warehouse, for the demo and the tests."""
