"""Decoding and scoring shared by fairseq validation and the stand-alone evaluation command."""
