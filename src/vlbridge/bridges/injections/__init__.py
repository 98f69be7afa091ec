"""Injections decide where visual vectors enter the LM: input space, memory space, cross-attention."""
