"""Registered fairseq criterions."""
