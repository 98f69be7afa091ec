"""Tiny random encoder-decoder LMs (T5 with a relu or gated-gelu FFN, BART) and their tokenizers.

The tokenizers are small byte-level BPEs trained here on a few sentences (no download, no sentencepiece),
framed like the real ones: T5's appends ``</s>``, BART's wraps a text in ``<s> ... </s>``. Models are
used in memory (:func:`tiny_seq2seq`) or saved as local Hugging Face folders (:func:`save_tiny_seq2seq`),
which go through the same loading code as real checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import torch

KINDS = ("t5", "flan-t5", "bart")
VOCAB = 97  # in-memory models (ids are small ints in hand-made batches)

CORPUS = [
    "What colour is the circle? red", "What shape is in the top left cell? square", "How many shapes are there? 3",
    "Is there a blue triangle? yes", "Is the green star left of the red circle? no", "a small yellow square",
    "Describe the image. A large purple circle in the middle and a small orange star below it.",
    "Question: Which shape is above the triangle?\nOptions: (A) circle (B) square\nAnswer: The answer is A.",
    "Where is the cyan diamond? bottom right", "There are two shapes: a white hexagon and a gray cross.",
]


def tiny_tokenizer(kind: str):
    """A byte-level BPE of ~320 tokens with T5's or BART's special tokens and framing."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bart = kind == "bart"
    specials = ["<s>", "<pad>", "</s>", "<unk>"] if bart else ["<pad>", "</s>", "<unk>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(CORPUS, trainer)
    ids = {t: backend.token_to_id(t) for t in specials}
    single = "<s> $A </s>" if bart else "$A </s>"
    backend.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[(t, ids[t]) for t in ("<s>", "</s>") if t in ids])
    extra = {"bos_token": "<s>"} if bart else {}
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                   **extra)


def tiny_config(kind: str, vocab_size: int, pad: int, eos: int, bos: int | None = None):
    from transformers import BartConfig, T5Config

    if kind == "bart":  # scale_embedding: the encoder's input embeddings carry sqrt(d), as in mBART;
        # init_std 0.2: at BART's 0.02 a model this small answers EOS to everything, hiding what tests check
        return BartConfig(vocab_size=vocab_size, d_model=32, encoder_layers=2, decoder_layers=2,
                          encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                          decoder_ffn_dim=64, max_position_embeddings=256, pad_token_id=pad, bos_token_id=bos,
                          eos_token_id=eos, decoder_start_token_id=eos, forced_eos_token_id=None,
                          scale_embedding=True, init_std=0.2)
    return T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                    num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=32,
                    feed_forward_proj="gated-gelu" if kind == "flan-t5" else "relu", pad_token_id=pad,
                    eos_token_id=eos, decoder_start_token_id=pad)


def tiny_seq2seq(kind: str, seed: int = 0):
    """An in-memory tiny model of ``kind`` (vocabulary :data:`VOCAB`; T5: pad 0, EOS 1; BART: BOS 0, pad 1,
    EOS 2), in eval mode."""
    from transformers import BartForConditionalGeneration, T5ForConditionalGeneration

    torch.manual_seed(seed)
    if kind == "bart":
        return BartForConditionalGeneration(tiny_config(kind, VOCAB, pad=1, eos=2, bos=0)).eval()
    return T5ForConditionalGeneration(tiny_config(kind, VOCAB, pad=0, eos=1)).eval()


def save_tiny_seq2seq(kind: str, folder: Path, seed: int = 0) -> Path:
    """A tiny model of ``kind`` and its tokenizer saved as a Hugging Face folder."""
    from transformers import BartForConditionalGeneration, T5ForConditionalGeneration

    tokenizer = tiny_tokenizer(kind)
    torch.manual_seed(seed)
    config = tiny_config(kind, len(tokenizer), pad=tokenizer.pad_token_id, eos=tokenizer.eos_token_id,
                         bos=tokenizer.bos_token_id)
    model = (BartForConditionalGeneration if kind == "bart" else T5ForConditionalGeneration)(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
