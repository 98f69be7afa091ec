"""Retrieval over a similarity matrix from any module that embeds images and texts.

The embedders here are real modules whose embeddings are known: an oracle that puts every caption on its
own image (Recall 100), and one that puts every caption on the next image (known ranks)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlbridge.bridges.qformer.stage1 import max_over_queries
from vlbridge.datasets.coco import read_coco_captions
from vlbridge.errors import ConfigError, DataError
from vlbridge.eval.retrieval import evaluate_retrieval, find_embedder, similarity_matrix, text_tokenizer_for
from vlbridge.metrics.retrieval import recall_at_k


class IndexEmbedder(nn.Module):
    """Images arrive as a one-hot "grid" of their index; text ids name an image; ``shift`` moves every
    text to image ``(i + shift) % N``. Embeddings are one-hot over the N images."""

    def __init__(self, num_images: int, shift: int = 0):
        super().__init__()
        self.num_images, self.shift = num_images, shift
        self.scale = nn.Parameter(torch.ones(()))  # a real module with a parameter, like a bridge's heads

    def embed_images(self, features):  # (B, 1, N) -> (B, N)
        return self.scale * features[:, 0]

    def embed_texts(self, text_ids, text_mask):  # (M, L) -> (M, N)
        assert text_mask.shape == text_ids.shape
        return nn.functional.one_hot((text_ids[:, 0] + self.shift) % self.num_images, self.num_images).float()


@pytest.fixture(scope="module")
def captions(shapes):
    return read_coco_captions(shapes / "coco" / "captions_train.json", shapes / "images")


def index_inputs(samples):
    position = {s.meta["image_id"]: i for i, s in enumerate(samples)}
    owner_of_text = {t: position[s.meta["image_id"]] for s in samples for t in s.meta["answers"]}

    def features(chunk):
        return nn.functional.one_hot(torch.tensor([position[s.meta["image_id"]] for s in chunk]),
                                     len(samples)).float()[:, None, :]

    def tokenize(texts):
        ids = torch.tensor([[owner_of_text[t], 0] for t in texts])
        return ids, torch.ones_like(ids)

    return features, tokenize


def test_oracle_embedder_finds_everything(captions):
    features, tokenize = index_inputs(captions)
    result = evaluate_retrieval(IndexEmbedder(len(captions)), features, tokenize, captions, batch_size=3)
    for key in ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"):
        assert result.scores[key] == 100.0
    texts = result.predictions["texts"]
    assert result.scores["num_texts"] == len(texts) == sum(len(s.meta["answers"]) for s in captions)
    assert all(t["rank"] == 1 and t["top_images"][0] == t["image_id"] for t in texts)
    images = result.predictions["images"]
    assert all(image["rank"] == 1 and image["top_texts"][0] in image["captions"] for image in images)


def test_shifted_embedder_gives_known_ranks(captions):
    # every text embeds on the next image: text->image never at 1; the right image ties at score 0 with
    # all others but the next one, and ties go by index, so ranks are known exactly
    n = len(captions)
    features, tokenize = index_inputs(captions)
    result = evaluate_retrieval(IndexEmbedder(n, shift=1), features, tokenize, captions)
    assert result.scores["t2i_R@1"] == 0.0 and result.scores["i2t_R@1"] == 0.0
    for t in result.predictions["texts"]:
        own = [s.meta["image_id"] for s in captions].index(t["image_id"])
        nxt = (own + 1) % n
        assert t["top_images"][0] == captions[nxt].meta["image_id"]
        assert t["rank"] == 2 + own - (nxt < own)  # the next image first, then indices 0.. in order
    # the recall is the metric's on the same matrix, and the written ranks agree with it
    owners = [i for i, s in enumerate(captions) for _ in s.meta["answers"]]
    sim = similarity_matrix(torch.eye(n), nn.functional.one_hot((torch.tensor(owners) + 1) % n, n).float())
    expected = recall_at_k(sim, owners)
    assert {k: result.scores[k] for k in expected} == expected
    for k in (1, 5, 10):
        ranks = [t["rank"] for t in result.predictions["texts"]]
        assert result.scores[f"t2i_R@{k}"] == pytest.approx(100 * sum(r <= k for r in ranks) / len(ranks))


def test_several_embeddings_per_image_score_by_their_best():
    torch.manual_seed(0)
    images, texts = torch.randn(3, 4, 8), torch.randn(5, 8)
    torch.testing.assert_close(similarity_matrix(images, texts), max_over_queries(images, texts))
    torch.testing.assert_close(similarity_matrix(images[:, 0], texts), images[:, 0] @ texts.t())
    with pytest.raises(ValueError, match=r"\(N, E\) or \(N, Q, E\)"):
        similarity_matrix(images, torch.randn(5, 7))


def test_a_bridge_without_embeddings_is_a_clear_error():
    projector = nn.Sequential(nn.Linear(4, 4), nn.GELU())
    with pytest.raises(ConfigError, match=r"bridge 'mlp -> input_space' cannot embed images and texts.*"
                                          r"embed_images\(features\) and embed_texts\(text_ids, text_mask\): "
                                          r"connectors \['qformer'\]"):
        find_embedder(projector, "mlp -> input_space")
    holder = nn.Sequential(nn.Linear(4, 4), IndexEmbedder(3))
    assert find_embedder(holder, "custom") is holder[1]
    with pytest.raises(ConfigError, match=r"no text tokenizer registered for connector 'custom'"):
        text_tokenizer_for("custom")


def test_bad_input(captions):
    features, tokenize = index_inputs(captions)
    with pytest.raises(ConfigError, match="has no embed_images/embed_texts"):
        evaluate_retrieval(nn.Linear(2, 2), features, tokenize, captions)
    with pytest.raises(DataError, match="no images to evaluate"):
        evaluate_retrieval(IndexEmbedder(1), features, tokenize, [])
    gone = [captions[0].__class__(**{**captions[0].__dict__, "image": captions[0].image.with_name("nope.png")})]
    with pytest.raises(DataError, match=r"field 'image': image file .*nope.png not found"):
        evaluate_retrieval(IndexEmbedder(1), features, tokenize, gone)
