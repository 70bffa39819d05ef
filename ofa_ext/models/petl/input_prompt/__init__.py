"""Input-level prompt tuning: soft tokens prepended to a body's input embeddings."""

from .layer import INPUT_PROMPT_INITS, InputPrompt

__all__ = ["INPUT_PROMPT_INITS", "InputPrompt"]
