"""labkit.monitoring."""
