"""EVE (METHODS.md section 4): an encoder-free vision-language model whose patch embedding layer (``pel.py``,
the ``eve_patch`` connector) reads pixels straight into the LM's input space; docs/eve.md."""
