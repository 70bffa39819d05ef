"""Input-level prompt tuning: soft tokens prepended to a body's input embeddings."""

from .layer import INPUT_PROMPT_INITS, VPT_FAN_IN, InputPrompt, prepend_prompt, xavier_bound

__all__ = ["INPUT_PROMPT_INITS", "VPT_FAN_IN", "InputPrompt", "prepend_prompt", "xavier_bound"]
