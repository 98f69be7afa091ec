"""Prompt formats that published recipes use, as pure functions (one file per format)."""
