"""BLIP-2 stage 1: representation learning with a frozen image encoder, loss = ITC + ITM + ITG.

Follows LAVIS `Blip2Qformer.forward` (blip2_qformer.py): ITC on max-over-queries cosine similarity with a
learnable temperature and label smoothing 0.1 over the global batch; ITM with one hard negative text per
image and one hard negative image per text sampled from softmax(similarity) without the positive; ITG,
captioning with `[DEC]` as first token, computed as a text pass over the cached query keys/values of the ITC
image pass (queries therefore see only queries, with the same dropout draw).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlbridge.bridges.qformer.distributed import gather_padded, gather_with_grad, world
from vlbridge.bridges.qformer.masks import itg_text_rows, itm_mask
from vlbridge.bridges.qformer.model import QFormer, activation


class QFormerLMHeadTransform(nn.Module):
    """BERT `cls.predictions.transform`: dense, activation, LayerNorm."""

    def __init__(self, hidden_size: int, act: str, eps: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.transform_act_fn = activation(act)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(x)))


class QFormerLMHead(nn.Module):
    """BERT `cls.predictions`; the decoder weight is the word embedding matrix (tied, as in LAVIS)."""

    def __init__(self, hidden_size: int, vocab_size: int, act: str, eps: float, initializer_range: float = 0.02):
        super().__init__()
        self.transform = QFormerLMHeadTransform(hidden_size, act, eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        nn.init.normal_(self.transform.dense.weight, std=initializer_range)
        nn.init.zeros_(self.transform.dense.bias)

    def forward(self, hidden: Tensor, word_embeddings: Tensor) -> Tensor:  # (N, H), (V, H) -> (N, V)
        return F.linear(self.transform(hidden), word_embeddings, self.bias)


@torch.no_grad()
def sample_hard_negatives(
    sim: Tensor, positive_offset: int, generator: torch.Generator | None = None
) -> Tensor:
    """One negative column per row of `sim` (B, C), drawn with probability softmax(sim row) with the positive
    (column positive_offset + row) excluded. As in LAVIS, 1e-4 is added before excluding the positive so a
    negative can be drawn even when the softmax underflows."""
    batch, columns = sim.shape
    if columns < 2:
        raise ValueError("ITM hard-negative mining needs at least 2 image-text pairs in the (global) batch")
    weights = F.softmax(sim.float(), dim=1) + 1e-4
    rows = torch.arange(batch, device=sim.device)
    weights[rows, positive_offset + rows] = 0.0
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)  # (B,)


def max_over_queries(image_feats: Tensor, text_feats: Tensor) -> Tensor:
    """ITC similarity (N, M) = max over queries of <image_feats[i, q], text_feats[j]>; (N,Q,E), (M,E)."""
    return torch.einsum("iqe,je->ijq", image_feats, text_feats).amax(dim=-1)


class Blip2Stage1(nn.Module):
    """Q-Former stage-1 model: `forward` gives the three losses; the other methods serve retrieval."""

    def __init__(
        self,
        qformer: QFormer,
        ln_vision: nn.Module | None,
        lm_head: QFormerLMHead,
        *,
        embed_dim: int = 256,
        dec_token_id: int,
        pad_token_id: int = 0,
        temperature: float = 0.07,
        label_smoothing: float = 0.1,
    ):
        super().__init__()
        if qformer.embeddings is None:
            raise ValueError("stage 1 needs a Q-Former with text input (use_qformer_text_input=True)")
        hidden = qformer.hidden_size
        self.qformer = qformer
        self.ln_vision = ln_vision if ln_vision is not None else nn.Identity()
        self.vision_projection = nn.Linear(hidden, embed_dim)  # Hugging Face Blip2ForImageTextRetrieval names
        self.text_projection = nn.Linear(hidden, embed_dim)
        self.itm_head = nn.Linear(hidden, 2)
        self.lm_head = lm_head
        self.temp = nn.Parameter(torch.tensor(float(temperature)))  # learnable, LAVIS `temp`
        self.dec_token_id = dec_token_id
        self.pad_token_id = pad_token_id
        self.label_smoothing = label_smoothing
        for linear in (self.vision_projection, self.text_projection, self.itm_head):
            nn.init.normal_(linear.weight, std=qformer.initializer_range)
            nn.init.zeros_(linear.bias)

    @property
    def temperature(self) -> Tensor:
        # Kept in [0.001, 0.5] as BLIP does (with a differentiable clamp rather than an in-place one).
        return self.temp.clamp(0.001, 0.5)

    def forward(
        self,
        image_features: Tensor,
        text_ids: Tensor,
        text_mask: Tensor,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """image_features: (B, n, d_v) from the frozen encoder; text_ids, text_mask: (B, L) with [CLS] first.
        Returns loss = itc + itm + itg and the three terms."""
        batch, num_q = image_features.shape[0], self.qformer.num_query_tokens
        rank, _ = world()
        image_embeds = self.ln_vision(image_features)  # (B, n, d_v)

        # Uni-modal passes (the ITC mask): queries with the image, keeping their keys/values for ITG; text alone.
        query_pass = self.qformer(image_embeds, use_cache=True)
        image_feats = F.normalize(self.vision_projection(query_pass.last_hidden_state), dim=-1)  # (B, Q, E)
        text_out = self.qformer(input_ids=text_ids, attention_mask=text_mask).last_hidden_state
        text_feat = F.normalize(self.text_projection(text_out[:, 0]), dim=-1)  # (B, E), the [CLS] token

        # ITC over the global batch
        image_feats_all = gather_with_grad(image_feats)  # (W*B, Q, E)
        text_feat_all = gather_with_grad(text_feat)  # (W*B, E)
        sim_i2t = max_over_queries(image_feats, text_feat_all) / self.temperature  # (B, W*B)
        sim_t2i = max_over_queries(image_feats_all, text_feat).t() / self.temperature  # (B, W*B)
        targets = torch.arange(batch, device=text_ids.device) + rank * batch
        itc = (
            F.cross_entropy(sim_i2t, targets, label_smoothing=self.label_smoothing)
            + F.cross_entropy(sim_t2i, targets, label_smoothing=self.label_smoothing)
        ) / 2

        # ITM: (pos text, pos image), (pos text, hard neg image), (hard neg text, pos image)
        image_embeds_all = gather_with_grad(image_embeds)  # (W*B, n, d_v)
        ids_all = gather_padded(text_ids, self.pad_token_id)  # (W*B, L')
        mask_all = gather_padded(text_mask, 0)
        neg_image = sample_hard_negatives(sim_t2i, rank * batch, generator)  # per text
        neg_text = sample_hard_negatives(sim_i2t, rank * batch, generator)  # per image
        pad = ids_all.shape[1] - text_ids.shape[1]
        ids = F.pad(text_ids, (0, pad), value=self.pad_token_id)
        mask = F.pad(text_mask, (0, pad), value=0)
        itm_ids = torch.cat([ids, ids, ids_all[neg_text]])  # (3B, L')
        itm_text_mask = torch.cat([mask, mask, mask_all[neg_text]])
        itm_images = torch.cat([image_embeds, image_embeds_all[neg_image], image_embeds])  # (3B, n, d_v)
        itm_logits = self._itm_logits(itm_images, itm_ids, itm_text_mask)  # (3B, 2)
        itm_labels = torch.cat([torch.ones(batch), torch.zeros(2 * batch)]).long().to(itm_logits.device)
        itm = F.cross_entropy(itm_logits, itm_labels)

        # ITG: [DEC] replaces [CLS]; text attends to all queries (cached) and to earlier text
        dec_ids = text_ids.clone()
        dec_ids[:, 0] = self.dec_token_id
        hidden = self.qformer(
            input_ids=dec_ids,
            attention_mask=itg_text_rows(num_q, text_mask),
            past_key_values=query_pass.past_key_values,
        ).last_hidden_state  # (B, L, H)
        labels = dec_ids.masked_fill(text_mask == 0, -100)[:, 1:]  # next-token targets
        keep = labels != -100
        logits = self.lm_head(hidden[:, :-1][keep], self.qformer.embeddings.word_embeddings.weight)
        itg = F.cross_entropy(logits, labels[keep], label_smoothing=self.label_smoothing)

        return {"loss": itc + itm + itg, "itc": itc, "itm": itm, "itg": itg}

    def _itm_logits(self, image_embeds: Tensor, text_ids: Tensor, text_mask: Tensor) -> Tensor:
        # image_embeds: (K, n, d_v) after ln_vision -> (K, 2): head on each query output, mean over queries
        num_q = self.qformer.num_query_tokens
        out = self.qformer(image_embeds, text_ids, itm_mask(num_q, text_mask)).last_hidden_state
        return self.itm_head(out[:, :num_q]).mean(dim=1)

    # embed_images / embed_texts: the retrieval protocol of vlbridge.eval.retrieval (`vlbridge eval --task retrieval`)
    def embed_images(self, image_features: Tensor) -> Tensor:
        """(N, n, d_v) -> normalised per-query ITC embeddings (N, Q, E)."""
        out = self.qformer(self.ln_vision(image_features)).last_hidden_state
        return F.normalize(self.vision_projection(out), dim=-1)

    def embed_texts(self, text_ids: Tensor, text_mask: Tensor) -> Tensor:
        """(M, L) -> normalised ITC embedding of [CLS] (M, E)."""
        out = self.qformer(input_ids=text_ids, attention_mask=text_mask).last_hidden_state
        return F.normalize(self.text_projection(out[:, 0]), dim=-1)

    def itm_scores(self, image_features: Tensor, text_ids: Tensor, text_mask: Tensor) -> Tensor:
        """Match logit per pair (K,): the "match" logit averaged over queries (LAVIS `compute_itm`)."""
        return self._itm_logits(self.ln_vision(image_features), text_ids, text_mask)[:, 1]


def build_blip2_stage1(
    qformer: QFormer,
    dec_token_id: int,
    *,
    embed_dim: int = 256,
    ln_vision: nn.Module | None = None,
    pad_token_id: int | None = None,
    temperature: float = 0.07,
    label_smoothing: float = 0.1,
) -> Blip2Stage1:
    """Stage-1 model around `qformer` (sizes taken from it). `ln_vision` defaults to a new LayerNorm(d_v) as in
    BLIP-2; pass the stage-2 connector's to share it, or `nn.Identity()` for already normalised features."""
    if qformer.embeddings is None:
        raise ValueError("stage 1 needs a Q-Former with text input (use_qformer_text_input=True)")
    if ln_vision is None:
        ln_vision = nn.LayerNorm(qformer.encoder_hidden_size)  # LAVIS ln_vision, torch default eps
    words = qformer.embeddings.word_embeddings
    lm_head = QFormerLMHead(
        qformer.hidden_size, words.num_embeddings, qformer.hidden_act, qformer.layer_norm_eps, qformer.initializer_range
    )
    return Blip2Stage1(
        qformer,
        ln_vision,
        lm_head,
        embed_dim=embed_dim,
        dec_token_id=dec_token_id,
        pad_token_id=words.padding_idx if pad_token_id is None else pad_token_id,
        temperature=temperature,
        label_smoothing=label_smoothing,
    )
