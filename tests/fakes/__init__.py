"""Test doubles that run real servers on loopback (fake upstream, ...)."""
