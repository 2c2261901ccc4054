"""teamrouter: a self-hostable, OpenRouter-compatible LLM API gateway for teams."""

__version__ = "0.1.0"
