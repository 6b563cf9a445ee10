"""labkit.evaluation."""
