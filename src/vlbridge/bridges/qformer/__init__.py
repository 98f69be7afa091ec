"""BLIP-2 Q-Former: the model (Hugging Face compatible), stage-1 losses, retrieval and the stage-2 connector."""

from vlbridge.bridges.qformer.config import QFormerConfig
from vlbridge.bridges.qformer.connector import QFormerConnector, build_qformer_connector
from vlbridge.bridges.qformer.convert import (
    add_dec_token,
    init_from_bert,
    load_blip2_checkpoint,
    load_hf_blip2_state_dict,
    qformer_config_from_bert,
    qformer_from_bert,
    to_hf_state_dict,
)
from vlbridge.bridges.qformer.masks import itc_mask, itg_mask, itm_mask
from vlbridge.bridges.qformer.model import QFormer, build_qformer
from vlbridge.bridges.qformer.retrieval import evaluate_retrieval
from vlbridge.bridges.qformer.stage1 import Blip2Stage1, build_blip2_stage1

__all__ = [
    "Blip2Stage1",
    "QFormer",
    "QFormerConfig",
    "QFormerConnector",
    "add_dec_token",
    "build_blip2_stage1",
    "build_qformer",
    "build_qformer_connector",
    "evaluate_retrieval",
    "init_from_bert",
    "itc_mask",
    "itg_mask",
    "itm_mask",
    "load_blip2_checkpoint",
    "load_hf_blip2_state_dict",
    "qformer_config_from_bert",
    "qformer_from_bert",
    "to_hf_state_dict",
]
