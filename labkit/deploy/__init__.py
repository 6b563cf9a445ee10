"""labkit.deploy."""
