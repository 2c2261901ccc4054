"""Provider adapters: one per upstream API (openai, anthropic) plus the offline demo.

Adapters are pure: they build upstream requests, parse responses and stream chunks, and map
errors. The gateway does the I/O (aiohttp) with what they build. See `registry.make_adapters`.
"""
