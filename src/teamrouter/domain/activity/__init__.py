"""Activity domain."""
