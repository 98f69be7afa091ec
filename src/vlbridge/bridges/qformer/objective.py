"""BLIP-2 stage 1 as a training objective (Li et al. 2023, Sec. 3.2): loss = ITC + ITM + ITG with equal weights,
on captions tokenized by the Q-Former's tokenizer and the frozen encoder's (cached) features; the LM does not
run. Needs the Q-Former connector with ``stage1: true`` (``model.bridge: blip2`` with
``bridge_options.stage1: true``); validation is image-text retrieval. Registered as ``blip2_stage1`` in
:data:`vlbridge.train.objectives.OBJECTIVES`.
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from vlbridge.batch import ImageInputs
from vlbridge.cost import saved_activation_bytes
from vlbridge.data.sample import Sample
from vlbridge.errors import ConfigError, DataError
from vlbridge.eval.generate_answers import GenerationSettings
from vlbridge.flops import count_flops
from vlbridge.precision import module_dtype
from vlbridge.train.distributed import full_parameters
from vlbridge.train.parameter_groups import apply_trainable, group_of
from vlbridge.train.report import readable_samples

STAGE1_MAX_TEXT_TOKENS = 32  # LAVIS BLIP-2 pre-training configs: max_txt_len 32 ([CLS] and [SEP] included)


@dataclass
class CaptionBatch:
    """Image-caption pairs for BLIP-2 stage 1: every row has an image."""

    text_ids: Tensor  # (B, L) Q-Former tokens, [CLS] first, right-padded
    attention_mask: Tensor  # (B, L)
    images: ImageInputs  # (B, ...) pixels or cached features
    sample_ids: list[str] = field(default_factory=list)

    def to(self, device) -> "CaptionBatch":
        return dataclasses.replace(self, text_ids=self.text_ids.to(device),
                                   attention_mask=self.attention_mask.to(device), images=self.images.to(device))

    @property
    def num_supervised(self) -> int:
        """Image-caption pairs: the stage-1 losses are means over them."""
        return self.text_ids.shape[0]

    @property
    def has_image(self) -> Tensor:
        return torch.ones(self.text_ids.shape[0], dtype=torch.bool)


def references(sample: Sample) -> list[str]:
    """The captions of an image-caption sample: ``meta.answers``, else its answer; a clear error otherwise."""
    task = sample.meta.get("task")
    if task not in (None, "caption"):
        raise DataError(f"BLIP-2 stage 1 trains on captions, this record is a {task!r} sample",
                        file=sample.source or None, record=sample.id, field="meta.task")
    found = list(sample.meta.get("answers") or ([sample.answer] if sample.answer else []))
    if not found or not all(isinstance(c, str) and c.strip() for c in found):
        raise DataError("no caption (or an empty one)", file=sample.source or None, record=sample.id,
                        field="meta.answers")
    if sample.image is None:
        raise DataError("an image-caption pair needs an image", file=sample.source or None, record=sample.id,
                        field="image")
    return found


class CaptionCollator:
    """Samples -> :class:`CaptionBatch`. Training (``draw=True``) reads one of the sample's reference captions,
    drawn uniformly each time the sample is read (LAVIS makes each COCO caption its own sample; drawing from the
    torch generator keeps a resumed run exact); evaluation reads the answer (the first reference)."""

    def __init__(self, tokenizer, load_images, max_length: int = STAGE1_MAX_TEXT_TOKENS, draw: bool = True):
        self.tokenizer, self.load_images, self.max_length, self.draw = tokenizer, load_images, max_length, draw

    def caption(self, sample: Sample) -> str:
        found = references(sample)
        if not self.draw:
            return sample.answer or found[0]
        return found[int(torch.randint(len(found), ()))]

    def __call__(self, samples: list[Sample]) -> CaptionBatch:
        texts = [self.caption(s) for s in samples]
        encoded = self.tokenizer(texts, padding="longest", truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
        return CaptionBatch(encoded["input_ids"], encoded["attention_mask"], self.load_images(samples),
                            [s.id for s in samples])


@dataclass
class Stage1Output:
    loss_sum: Tensor  # () the stage-1 loss times the number of pairs
    terms: dict[str, Tensor]  # itc, itm, itg, each times the number of pairs


class Stage1Loss(nn.Module):
    """What the trainer wraps in stage 1: the bridge (whose connector's ``stage1`` computes the losses) and the vision
    encoder (run only for pixel batches), under the names they have in the :class:`VisionLanguageModel`, so
    checkpoints and optimizer states are keyed alike in both stages. The LM is not part of it."""

    def __init__(self, model):
        super().__init__()
        self.bridge = model.bridge
        self.vision_encoder = model.vision_encoder

    def grid(self, images: ImageInputs) -> Tensor:
        if images.grid is not None:
            grid = images.grid
        elif self.vision_encoder is None:
            raise ValueError("the batch holds pixels but the model has no vision encoder")
        else:
            grid = self.vision_encoder(images.pixel_values).grid
        return grid.to(module_dtype(self.bridge.connector))  # a bf16 encoder's features, read in the Q-Former's dtype

    def forward(self, batch: CaptionBatch) -> Stage1Output:
        losses = self.bridge.connector.stage1(self.grid(batch.images), batch.text_ids, batch.attention_mask)
        pairs = batch.num_supervised
        return Stage1Output(losses["loss"] * pairs, {k: losses[k].detach() * pairs for k in ("itc", "itm", "itg")})


def stage1_model(model):
    """The bridge's stage-1 model, or a clear error saying how to get one."""
    stage1 = getattr(model.bridge.connector, "stage1", None)
    if not isinstance(stage1, nn.Module) or not callable(getattr(stage1, "embed_images", None)):
        raise ConfigError("train.objective=blip2_stage1 needs the BLIP-2 stage-1 model: set model.bridge=blip2 and "
                          "model.bridge_options.stage1=true")
    return stage1


class Blip2Stage1Objective:
    """BLIP-2 stage 1: ITC + ITM + ITG of ``bridge.stage1`` on image-caption pairs; validation = retrieval."""

    max_length = STAGE1_MAX_TEXT_TOKENS

    def set_trainable(self, model, groups: list[str], log=print) -> dict[str, dict[str, int]]:
        """The groups' parameters that stage 1 reads: the stage-1 model's (Q-Former, ln_vision, heads) and the
        vision encoder's (pixel batches). The rest (the language projection, LoRA) is frozen, and said so."""
        reads = {id(p) for p in stage1_model(model).parameters()}
        if model.vision_encoder is not None:
            reads |= {id(p) for p in model.vision_encoder.parameters()}
        counts = apply_trainable(model, groups)
        frozen = []
        for name, parameter in model.named_parameters():
            if parameter.requires_grad and id(parameter) not in reads:
                parameter.requires_grad_(False)
                counts[group_of(name)]["trainable"] -= parameter.numel()
                frozen.append(name)
        if frozen:
            log(f"blip2_stage1 does not read {len(frozen)} tensors of the trained groups; they stay frozen: "
                f"{frozen[:4]}{' ...' if len(frozen) > 4 else ''}")
        return counts

    def collators(self, built, recipe, images) -> tuple[CaptionCollator, CaptionCollator]:
        from vlbridge.eval.retrieval import text_tokenizer_for

        tokenizer = text_tokenizer_for(built.spec.connector)
        return (CaptionCollator(tokenizer, images, self.max_length, draw=True),
                CaptionCollator(tokenizer, images, self.max_length, draw=False))

    def report(self, built, counts: dict, trainable_groups: list[str], collator, samples: list[Sample], *,
               samples_per_micro_batch: int, micro_batches_per_step: int, cached_features: bool,
               precision: str) -> dict:
        """FLOPs and activation memory measured on one training micro-batch (the LM does not run): torch's
        FLOP counter on the stage-1 forward, x3 for forward + backward (the weights train); the activation
        bytes are those autograd saves for the backward pass, parameters excluded."""
        model = built.model
        with torch.random.fork_rng(devices=[]):  # the training run's random draws stay as they were
            batch = collator(readable_samples(collator, samples, samples_per_micro_batch, "image-caption pair"))
            module = Stage1Loss(model)
            flops: list[int] = []
            activations = saved_activation_bytes(model, lambda: flops.append(count_flops(lambda: module(batch))))
            vision = 0
            if not cached_features and model.vision_encoder is not None:
                with torch.no_grad():
                    vision = count_flops(lambda: model.vision_encoder(batch.images.pixel_values[:1]))
        pairs = batch.num_supervised
        text = float(batch.attention_mask.sum()) / pairs
        per_sample = flops[0] / pairs
        vision_backward = 1 if counts.get("vision_adapters", {}).get("trainable", 0) else 0
        step_samples = samples_per_micro_batch * micro_batches_per_step
        per_sample_train = 3 * per_sample + vision * (1 + vision_backward)
        return {
            "parameters": counts,
            "parameters_total": sum(c["total"] for c in counts.values()),
            "parameters_trainable": sum(c["trainable"] for c in counts.values()),
            "trainable_groups": list(trainable_groups),
            "lm_trains": False,
            "objective": "blip2_stage1",
            "samples_per_step": step_samples,
            "mean_sequence_length": text,  # caption tokens of the measured micro-batch
            "mean_supervised_tokens": text - 1,  # ITG next-token targets per caption
            "forward_flops_per_sample": {"language_model": 0, "bridge": per_sample, "vision_encoder": vision},
            "train_flops_per_sample": per_sample_train,
            "train_flops_per_step": per_sample_train * step_samples,
            "activation_bytes_per_micro_batch": activations,
        }

    def loss_module(self, model) -> nn.Module:
        stage1_model(model)
        return Stage1Loss(model)

    def terms(self, output: Stage1Output) -> dict[str, Tensor]:
        return output.terms

    def evaluate(self, built, collator: CaptionCollator, samples, settings: GenerationSettings, accelerator=None,
                 wrapped=None) -> dict:
        """Recall@1/5/10 both ways on the validation images and all their reference captions, from ITC scores
        (:func:`vlbridge.eval.retrieval.evaluate_retrieval`, as ``vlbridge eval --task retrieval``); the
        prediction of a sample is its image's rank and top texts. Every process computes all of it."""
        from vlbridge.eval.retrieval import evaluate_retrieval, tokenize_texts

        model = built.model
        device = accelerator.device if accelerator is not None else torch.device("cpu")
        items = [dataclasses.replace(s, meta={"image_id": s.id, **s.meta, "answers": references(s)})
                 for s in samples]
        loss = Stage1Loss(model)

        def features(chunk: list[Sample]) -> Tensor:  # (B, n, d_v)
            return loss.grid(collator.load_images(chunk).to(device))

        def tokenize(texts: list[str]) -> tuple[Tensor, Tensor]:
            return tuple(t.to(device) for t in tokenize_texts(collator.tokenizer, texts))

        with full_parameters(accelerator, wrapped) if accelerator is not None else nullcontext():
            result = evaluate_retrieval(stage1_model(model), features, tokenize, items, batch_size=settings.batch_size)
        return dict(result.scores) | {"predictions": result.predictions["images"]}
