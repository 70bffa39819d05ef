"""Small shared helpers (option parsing, atomic file writes)."""
