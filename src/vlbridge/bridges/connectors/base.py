"""The interface every connector implements: what it consumes, how many vectors it emits, what it costs.

A connector turns what the visual front end gives into visual vectors for an injection:

- ``consumes = "features"``: grid features (B, n, d_v) of a frozen vision encoder (MLP projector, Q-Former,
  Perceiver resampler);
- ``consumes = "pixels"``: pixel tensors (B, C, H, W) straight from the image, with no encoder at all
  (a linear patch embedding, EVE's patch embedding layer); such a connector also owns the preprocessing
  (:meth:`preprocess`, which may add channels such as a valid-pixel mask) and the visual token count
  (``max_inputs``; a forward may return ``(vectors, lengths)`` when images of different sizes give different
  counts).

Building checks the handshake (:func:`vlbridge.bridges.registry.build_bridge`): the front end gives what
the connector consumes, the connector's output width is what the injection takes, and the injection has
room for the connector's vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor, nn

from vlbridge.cost import saved_activation_bytes
from vlbridge.errors import ConfigError
from vlbridge.flops import count_flops


def is_positive_int(value: object) -> bool:
    """An option check the connectors share: an int (not a bool) above 0."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class Connector(nn.Module):
    """(B, n, d_v) features or (B, 3, H, W) pixels -> (B, n', d_out) visual vectors.

    Subclasses set ``consumes`` and ``output_width`` and override :meth:`num_output_tokens` when n' != n.
    The cost methods measure one image with torch's counters unless a subclass gives a closed form.
    """

    consumes: str = "features"
    input_width: int  # d_v (features) or 3 (pixels)
    output_width: int  # d_out, what the injection reads
    max_inputs: int | None = None  # pixel connectors: input patches of the largest image they take
    takes_frames: bool = False  # True: forward also takes clips, (B, F, v, d_v) frames in time order -> (B, n', d_out)
    max_frames: int | None = None  # clips: the most frames per clip (its frame embeddings); None: no limit
    reads_prompt: bool = False  # True: forward also takes the text prompt, (B, T) ids and mask, left-padded

    def frames_refused(self, num_frames: int) -> str | None:
        """Why this connector cannot read clips of ``num_frames`` frames, or None when it can (checked before every
        batch of clips, so the error can name the record)."""
        if not self.takes_frames:
            return (f"the {type(self).__name__} connector reads one image per sample, not a clip of frames; the "
                    "connectors that take clips are perceiver and tiny_lm (with connector option max_frames)")
        if self.max_frames is not None and num_frames > self.max_frames:
            return (f"a clip of {num_frames} frames, more than the {type(self).__name__} connector's frame embeddings "
                    f"allow (connector option max_frames={self.max_frames})")
        return None

    def num_output_tokens(self, num_inputs: int) -> int:
        """Visual vectors per image for ``num_inputs`` input vectors (pixels: patches of the largest image)."""
        return num_inputs

    def example_input(self, num_inputs: int) -> Tensor:
        """One image's worth of input, zeros: (1, num_inputs, d_v) features (pixel connectors override)."""
        parameter = next(self.parameters(), None)
        dtype = parameter.dtype if parameter is not None else torch.float32
        return torch.zeros(1, num_inputs, self.input_width, dtype=dtype)

    def flops(self, num_inputs: int) -> int:
        """Forward FLOPs for one image of ``num_inputs`` input vectors (measured by torch's flop counter)."""
        example = self.example_input(num_inputs)
        with torch.no_grad():
            return count_flops(lambda: self(example))

    def activation_bytes(self, num_inputs: int) -> int:
        """Bytes autograd keeps for the backward pass of one image (measured; parameters excluded)."""
        example = self.example_input(num_inputs)
        return saved_activation_bytes(self, lambda: self(example))

    def grid_cells(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """For an aligner (EVE's PAL): which of each image's output vectors are cells of a spatial grid, (B, n_max)
        bool, raster order, and each grid's (h, w), (B, 2) long. Connectors whose vectors form no grid refuse."""
        raise ConfigError(f"the {type(self).__name__} connector does not lay its vectors out on a grid, so an aligner "
                          "(model.aligner) cannot read them; use a connector that does (e.g. eve_patch, patch)")

    def adopt_state(self, state: dict[str, Tensor], meta: dict, source: str) -> dict[str, Tensor]:
        """Another run's trained tensors (``model.init_from`` = ``source``, its ``meta.json`` = ``meta``) under this
        model's names; unchanged by default. A connector built from another kind of run renames them here
        (PaLM2-VAdapter's adapter from a captioning run: :mod:`vlbridge.bridges.connectors.tiny_lm`)."""
        return state

    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        """Pixel connectors: PIL images -> (B, C, H, W). Feature connectors read an encoder's preprocessing."""
        raise NotImplementedError(f"{type(self).__name__} consumes {self.consumes}, not images")
