"""Keys domain."""
