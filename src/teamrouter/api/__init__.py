"""Thin JSON front end: parse, call one service, serialize. OpenRouter-compatible under /api/v1."""
