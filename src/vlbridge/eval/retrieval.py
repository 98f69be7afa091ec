"""Image-text retrieval: a bridge that embeds images and texts gives a similarity matrix -> Recall@K.

A module *can embed images and texts* when it has both methods

    embed_images(features)            (N, n, d_v) vision-encoder grid -> (N, E), or (N, Q, E) for several
                                      embeddings per image (BLIP-2: one per query)
    embed_texts(text_ids, text_mask)  (M, L) token ids and attention mask -> (M, E)

(the BLIP-2 Q-Former with its stage-1 heads: :mod:`vlbridge.bridges.qformer`). The image-text score is
the dot product of the embeddings (cosine when they are normalised, as ITC's are); with several
embeddings per image it is the best of them, BLIP-2's "max over queries" ITC similarity (LAVIS
``compute_sim_matrix`` without ITM re-ranking). Recall@K both ways follows the ALBEF/BLIP convention
(:func:`vlbridge.metrics.retrieval.recall_at_k`): an image is found when any of its captions ranks < K.

Texts are tokenized with the tokenizer of the bridge's text side, registered per connector in
:data:`TEXT_TOKENIZERS`; the LM's tokenizer is not the Q-Former's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from vlbridge.data.sample import Sample
from vlbridge.errors import ConfigError, DataError
from vlbridge.eval.result import TaskResult, require_images, require_items, require_meta
from vlbridge.metrics.retrieval import recall_at_k

MAX_TEXT_TOKENS = 35  # LAVIS BLIP-2 retrieval configs: max_txt_len 35 (longer captions are cut)
TOP = 10  # retrieved items listed per query in the predictions (enough to recompute R@1/5/10)


def _qformer_text_tokenizer():
    from vlbridge.bridges.qformer.bridge import qformer_tokenizer

    return qformer_tokenizer()[0]


TEXT_TOKENIZERS: dict[str, Callable[[], object]] = {
    "qformer": _qformer_text_tokenizer,  # BERT WordPiece of all-MiniLM-L6-v2 (+[DEC]); [CLS] first
}
"""connector -> loader of the tokenizer its text side reads; also the list of connectors that retrieve."""


def can_embed(module: nn.Module) -> bool:
    return callable(getattr(module, "embed_images", None)) and callable(getattr(module, "embed_texts", None))


def find_embedder(bridge: nn.Module, bridge_name: str) -> nn.Module:
    """The bridge itself or its first submodule that can embed images and texts; a clear error otherwise."""
    for module in bridge.modules():
        if can_embed(module):
            return module
    raise ConfigError(
        f"bridge {bridge_name!r} cannot embed images and texts, so it gives no retrieval scores. Retrieval needs "
        f"a bridge module with embed_images(features) and embed_texts(text_ids, text_mask): connectors "
        f"{sorted(TEXT_TOKENIZERS)} (the BLIP-2 Q-Former with its stage-1 ITC heads, option stage1: true)")


def text_tokenizer_for(connector: str):
    if connector not in TEXT_TOKENIZERS:
        raise ConfigError(f"no text tokenizer registered for connector {connector!r}; connectors with one: "
                          f"{sorted(TEXT_TOKENIZERS)} (vlbridge.eval.retrieval.TEXT_TOKENIZERS)")
    return TEXT_TOKENIZERS[connector]()


def tokenize_texts(tokenizer, texts: list[str], max_length: int = MAX_TEXT_TOKENS) -> tuple[Tensor, Tensor]:
    """(M, L) ids and attention mask, right-padded, with the tokenizer's special tokens ([CLS] ...)."""
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"]


def similarity_matrix(image_embeds: Tensor, text_embeds: Tensor) -> Tensor:
    """(N, E) or (N, Q, E) images, (M, E) texts -> (N, M) dot products (the best of the Q per image)."""
    if text_embeds.dim() != 2 or image_embeds.dim() not in (2, 3) or image_embeds.shape[-1] != text_embeds.shape[-1]:
        raise ValueError(f"embeddings must be (N, E) or (N, Q, E) for images and (M, E) for texts, got "
                         f"{tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}")
    if image_embeds.dim() == 2:
        return image_embeds @ text_embeds.t()
    return torch.einsum("nqe,me->nmq", image_embeds, text_embeds).amax(dim=-1)


def _rankings(scores: np.ndarray, own: np.ndarray, top: int, chunk: int = 256) -> tuple[list[list[int]], list[int]]:
    """Per row: the ``top`` best columns (stable descending order, ties by index as the metric breaks
    them) and the 1-based rank of the best column marked in ``own`` (R, C) bool."""
    tops, ranks = [], []
    for start in range(0, scores.shape[0], chunk):
        order = np.argsort(-scores[start:start + chunk], axis=1, kind="stable")
        tops += order[:, :top].tolist()
        hits = np.take_along_axis(own[start:start + chunk], order, axis=1)
        ranks += (hits.argmax(axis=1) + 1).tolist()
    return tops, ranks


@torch.no_grad()
def evaluate_retrieval(embedder: nn.Module, image_features: Callable[[list[Sample]], Tensor],
                       tokenize: Callable[[list[str]], tuple[Tensor, Tensor]], samples: Sequence[Sample],
                       batch_size: int = 32, ks: Sequence[int] = (1, 5, 10)) -> TaskResult:
    """Recall@K image->text and text->image over the images of ``samples`` (one per image, its captions in
    ``meta["answers"]``, as the COCO readers give) and all their captions.

    ``image_features`` maps a batch of samples to their (B, n, d_v) encoder grid; ``tokenize`` maps texts
    to (ids, mask) for ``embedder.embed_texts``.
    """
    if not can_embed(embedder):
        raise ConfigError(f"{type(embedder).__name__} has no embed_images/embed_texts methods")
    require_items(samples, "images")
    texts, owner = [], []
    for index, s in enumerate(samples):
        require_meta(s, "image_id", "answers")
        if not s.meta["answers"]:
            raise DataError("no caption", file=s.source or None, record=s.id, field="meta.answers")
        texts += list(s.meta["answers"])
        owner += [index] * len(s.meta["answers"])
    require_images(samples)
    was_training = embedder.training
    embedder.eval()
    try:
        image_embeds = torch.cat([embedder.embed_images(image_features(list(samples[i:i + batch_size])))
                                  for i in range(0, len(samples), batch_size)])
        text_embeds = torch.cat([embedder.embed_texts(*tokenize(texts[i:i + batch_size]))
                                 for i in range(0, len(texts), batch_size)])
    finally:
        embedder.train(was_training)
    similarity = similarity_matrix(image_embeds.float(), text_embeds.float()).cpu().numpy().astype(np.float64)
    scores = recall_at_k(similarity, owner, ks)
    own = np.asarray(owner)[None, :] == np.arange(len(samples))[:, None]  # (N, M) text j belongs to image i
    top = max(max(ks), TOP)
    image_tops, image_ranks = _rankings(similarity, own, top)
    text_tops, text_ranks = _rankings(similarity.T, own.T, top)
    ids = [s.meta["image_id"] for s in samples]
    images = [{"image_id": ids[i], "captions": [j for j in range(len(texts)) if owner[j] == i],
               "rank": image_ranks[i], "top_texts": image_tops[i]} for i in range(len(samples))]
    text_items = [{"text_index": j, "text": texts[j], "image_id": ids[owner[j]], "rank": text_ranks[j],
                   "top_images": [ids[i] for i in text_tops[j]]} for j in range(len(texts))]
    return TaskResult(
        task="retrieval",
        prompt=None,
        metric={"name": "recall_at_k", "ks": list(ks),
                "version": "ALBEF/BLIP itm_eval convention: image->text counts the best-ranked of an image's "
                           "captions; ties broken by index",
                "similarity": "dot product of embed_images and embed_texts outputs (max over an image's "
                              "embeddings when it has several)",
                "scale": "percent"},
        scores={**scores, "num_images": len(samples), "num_texts": len(texts)},
        predictions={"images": images, "texts": text_items},
    )
