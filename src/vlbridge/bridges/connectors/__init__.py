"""Connectors turn vision features (B, n, d_v) into visual vectors of the LM's width (B, n', d)."""
