"""Bridges: a connector (vision features -> visual vectors) plus an injection (where they enter the LM)."""
