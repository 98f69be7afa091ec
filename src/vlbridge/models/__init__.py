"""The language-model side: a thin wrapper over Hugging Face causal LMs."""
