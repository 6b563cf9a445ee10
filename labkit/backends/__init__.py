"""Backends: litellm for every remote provider, the embedded llama.cpp model, and fakes."""

from .base import Backend

__all__ = ["Backend"]
