"""Credits domain."""
