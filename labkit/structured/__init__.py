"""labkit.structured."""
