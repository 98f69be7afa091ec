"""The start-of-run report: what trains, what a step costs in FLOPs, and how much activation memory
a micro-batch keeps for the backward pass, printed and logged before the first step.

FLOPs: the LM's are analytic, as the bridge's injection reports them (:meth:`Injection.lm_flops`: the
image's positions for input-space bridges, memory slots for memory-space ones, the blocks of
cross-attention); the connector's are its own report (:meth:`Connector.flops`), and (when its features are
not cached) the vision encoder's forward is counted once by torch's FLOP counter on one image. A clip counts as its
frames: the encoder runs once per frame and the connector reads all the frames' vectors (the mean number of frames
per image sample of the data). A training step costs forward + backward, and the backward pass one
forward's worth for activation gradients wherever a gradient must pass (through the whole LM, since the
bridge feeds its first layer or every layer) plus one more where weights train (the 2:1 split behind
the "6N" rule, Kaplan et al. 2020).

Activation memory: :func:`activation_bytes`, a pure function of the LM's shape (below), plus what the
injection's own modules keep (:meth:`Injection.activation_bytes`); together they match the tensors
autograd saves for the tiny test models to within 15 %. Encoder-decoder LMs (T5, BART) have no
closed form here: what autograd saves is measured on one training micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlbridge.cost import saved_activation_bytes
from vlbridge.data.sample import Sample
from vlbridge.errors import DataError
from vlbridge.flops import LMShape, count_flops
from vlbridge.precision import describe as describe_precision
from vlbridge.image_inputs import WithTeacher
from vlbridge.text.tokenize import IGNORE
from vlbridge.train.parameter_groups import format_counts

INSPECTED_SAMPLES = 64  # training samples whose lengths stand for the data set


def activation_bytes(shape: LMShape, tokens: int, logit_positions: int, *, bytes_per_value: int = 4,
                     weights_train: bool = False) -> int:
    """Bytes autograd keeps between the forward and backward pass of the LM for ``tokens`` positions.

    Per token and decoder layer, with frozen weights (a frozen linear needs no saved input): both
    norms' inputs (2d), attention's q, k, v and output (4·H·h; k and v counted at full head count, as
    when they are repeated for grouped-query attention), and the FFN's nonlinearity: gate, silu(gate)
    and up for SwiGLU (3D); four D-wide tensors for a plain FFN with GPT-2's tanh GELU, as Hugging Face
    writes it (4D). Trained weights also keep their linears' inputs and the norms' normalised values
    (4d + D). Dropout masks inside the LM are not counted. The head keeps the log-softmax of every logit
    position (V, float32) and the final norm's input (d)."""
    d, D, q = shape.width, shape.ffn_width, shape.heads * shape.head_dim
    per_token = 2 * d + 4 * q + (3 * D if shape.gated else 4 * D)
    if weights_train:
        per_token += 4 * d + D
    values = tokens * shape.layers * per_token + tokens * d
    return values * bytes_per_value + logit_positions * shape.vocab * 4


@dataclass
class SampleLengths:
    sequence: float  # mean positions the LM sees per sample (image positions included)
    longest: int  # the longest of them (a micro-batch is padded to its longest row)
    supervised: float  # mean logit positions per sample (answer tokens)
    with_image: float  # fraction of samples with an image
    frames: float = 1.0  # mean images per sample with an image (a clip's frames; 1 for single images)


def sample_lengths(collator, samples: list[Sample], image_positions: int) -> SampleLengths:
    lengths, supervised, images, frames = [], [], [], []
    for sample in samples[:INSPECTED_SAMPLES]:
        try:
            encoded = collator.encode(sample)
        except DataError:
            continue  # a bad record: reported where training meets it
        lengths.append(len(encoded.input_ids) - 1 + image_positions if encoded.has_image else len(encoded.input_ids))
        supervised.append(len(encoded.targets) if encoded.targets is not None  # encoder-decoder: the decoder's
                          else sum(label != IGNORE for label in encoded.labels[1:]))
        images.append(encoded.has_image)
        if encoded.has_image:
            frames.append(len(sample.frames) or 1)
    n = max(len(lengths), 1)
    return SampleLengths(sum(lengths) / n, max(lengths, default=0), sum(supervised) / n, sum(images) / n,
                         sum(frames) / len(frames) if frames else 1.0)


def readable_samples(collator, samples: list[Sample], count: int, what: str = "sample") -> list[Sample]:
    """The first ``count`` samples the collator reads without error (bad records are reported in training);
    ``what`` names them in the error when there is none."""
    good = []
    for sample in samples:
        try:
            collator([sample])
        except DataError:
            continue
        good.append(sample)
        if len(good) == count:
            break
    if not good:
        raise DataError(f"no readable {what} among the training samples")
    return good


def _measured_forward(fn) -> int | None:
    try:
        with torch.no_grad():
            return count_flops(fn)
    except Exception:  # noqa: BLE001 - an encoder the counter cannot follow only loses its line
        return None


def start_report(built, counts: dict, trainable_groups: list[str], collator, samples: list[Sample], *,
                 samples_per_micro_batch: int, micro_batches_per_step: int, cached_features: bool,
                 precision: str) -> dict:
    """The numbers of the report (see the module docstring); everything per process unless it says step."""
    model = built.model
    injection, lm_module = model.bridge.injection, model.language_model
    lengths = sample_lengths(collator, samples, built.image_tokens)
    inputs = model.bridge.num_visual_inputs(model.num_connector_inputs)  # vectors entering the connector
    visual = model.bridge.num_visual_tokens(model.num_connector_inputs)
    image_positions = injection.visual_sequence_length(visual)
    text = round(lengths.sequence - lengths.with_image * image_positions)  # mean text positions per sample
    supervised = round(lengths.supervised)
    lm = round(lengths.with_image * injection.lm_flops(lm_module, text, visual, supervised)
               + (1 - lengths.with_image) * injection.lm_flops(lm_module, text, 0, supervised))
    encoder, bridge = model.vision_encoder, None
    vision = 0
    if lengths.with_image:
        # a clip's frames all enter the connector (perceiver, tiny_lm: their cost is affine in the inputs, so the
        # cost at the mean number of frames is the mean cost)
        bridge = model.bridge.connector.flops(round(inputs * lengths.frames))
        if encoder is not None and not cached_features:
            height, width = encoder.backbone.preprocessing.output_size
            vision = round(lengths.frames * (_measured_forward(lambda: encoder(torch.zeros(1, 3, height, width))) or 0))
    lm_trains = any(counts.get(g, {}).get("trainable", 0) for g in ("lm", "lora"))
    full_lm = counts.get("lm", {}).get("trainable", 0) > 0
    encoder_backward = 0 if cached_features else (2 if counts.get("vision", {}).get("trainable", 0) else
                                                   1 if counts.get("vision_adapters", {}).get("trainable", 0) else 0)
    # per sample: the LM always; the bridge and encoder for the share of samples that have an image
    per_sample_train = (lm * (3 if full_lm else 2)
                        + lengths.with_image * (3 * (bridge or 0) + vision * (1 + encoder_backward)))
    step_samples = samples_per_micro_batch * micro_batches_per_step
    bytes_per_value = 2 if precision == "bf16" else 4
    if model.language_model.is_encoder_decoder:  # two stacks, eager attention: measured on one micro-batch
        batch = collator(readable_samples(collator, samples, samples_per_micro_batch))
        with torch.random.fork_rng(devices=[]):
            activations = saved_activation_bytes(model, lambda: model(batch)) * bytes_per_value // 4
    else:
        tokens = samples_per_micro_batch * lengths.longest
        activations = activation_bytes(
            LMShape.of(lm_module), tokens, round(samples_per_micro_batch * lengths.supervised),
            bytes_per_value=bytes_per_value, weights_train=full_lm) + injection.activation_bytes(
            lm_module, tokens, visual, samples_per_micro_batch, bytes_per_value)
    total = sum(c["total"] for c in counts.values())
    trainable = sum(c["trainable"] for c in counts.values())
    return {
        "parameters": counts,
        "parameters_total": total,
        "parameters_trainable": trainable,
        "trainable_groups": list(trainable_groups),
        "lm_trains": lm_trains,
        "samples_per_step": step_samples,
        "mean_sequence_length": lengths.sequence,
        "mean_supervised_tokens": lengths.supervised,
        "mean_frames_per_image_sample": lengths.frames,
        "forward_flops_per_sample": {"language_model": lm, "bridge": bridge, "vision_encoder": vision},
        "train_flops_per_sample": per_sample_train,
        "train_flops_per_step": per_sample_train * step_samples,
        "activation_bytes_per_micro_batch": activations,
    }


def _si(value: float | None, unit: str) -> str:
    if value is None:
        return "not measured"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def format_report(report: dict) -> str:
    f = report["forward_flops_per_sample"]
    frames = report.get("mean_frames_per_image_sample", 1)
    clips = f", clips of {frames:.1f} frames on average" if frames != 1 else ""
    return "\n".join([
        format_counts(report["parameters"]),
        f"samples per step {report['samples_per_step']} (all processes), mean sequence "
        f"{report['mean_sequence_length']:.1f} positions, {report['mean_supervised_tokens']:.1f} answer tokens{clips}",
        f"forward FLOPs per sample: LM {_si(f['language_model'], 'FLOP')} (analytic), bridge "
        f"{_si(f['bridge'], 'FLOP')}, vision encoder {_si(f['vision_encoder'], 'FLOP')}",
        f"training FLOPs per step {_si(report['train_flops_per_step'], 'FLOP')} (forward + backward)",
        f"activation memory per micro-batch ~{report['activation_bytes_per_micro_batch'] / 2**20:.1f} MiB (estimate)",
        *([describe_precision(report["precision"])] if "precision" in report else []),
    ])


def precompute_message(images, count: int, seconds: float) -> str:
    """What filling the frozen encoder's feature table for ``count`` images did: encoded them, or loaded their
    features from the on-disk cache (a second run on the same images encodes none), or both."""
    counted = images  # the loader whose images the progress bar counted (the teacher's when the student reads pixels)
    if isinstance(images, WithTeacher):
        counted = images.images if images.images.cached else images.teacher
    cache = getattr(counted, "disk_cache", None)
    loaded = min(cache.hits, count) if cache is not None else 0
    if not loaded:
        return f"encoded {count} images once in {seconds:.1f} s"
    if loaded == count:
        return f"loaded {count} cached features in {seconds:.1f} s (from {cache.folder})"
    return f"loaded {loaded} cached features and encoded {count - loaded} images once in {seconds:.1f} s"
