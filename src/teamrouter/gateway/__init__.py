"""The inference path: catalog, pricing, routing, admission, settlement (no HTTP types)."""
