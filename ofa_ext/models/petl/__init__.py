"""Parameter-efficient tuning layers for OFA."""
