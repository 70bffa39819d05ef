"""OFA encoder-decoder, parameter names equal to the official OFA checkpoints."""
