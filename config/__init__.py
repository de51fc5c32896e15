"""Settings and the loaders of the YAML files kept beside them (one place for configuration)."""
