"""Data layer: OFA dictionary and BPE, TSV reader, datasets, transforms, synthetic data."""
