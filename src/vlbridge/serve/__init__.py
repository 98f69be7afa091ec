"""The browser demo behind ``vlbridge serve``: runs as served (``served_run``), example images (``examples``)
and the Gradio page (``app``, the only module that imports Gradio)."""
