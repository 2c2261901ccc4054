"""Domain services: all rules live here; no web framework imports."""
