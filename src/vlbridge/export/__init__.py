"""Interoperability with Hugging Face: a run exported as a transformers model folder (LLaVA) or as its trained
tensors with a model card, and a LLaVA folder's projector imported to start a run (``model.init_from: hf:DIR``)."""

from vlbridge.export.run import FORMATS, Exported, export_run

__all__ = ["FORMATS", "Exported", "export_run"]
