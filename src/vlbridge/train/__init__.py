"""Recipes (YAML) and the one training loop that runs them."""
