"""Datasets: standard formats in, one :class:`Sample` type out."""
