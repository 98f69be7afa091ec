"""VisionEncoder on tiny random ViTs loaded through the real local-folder path."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

from vlbridge.encoders import VisionEncoder, build_vision_encoder
from vlbridge.errors import ConfigError
from vlbridge.weights import load_vision_backbone
from vlbridge.weights.backbone import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessing, VisionBackbone

# offset of the first patch token in the hidden states: CLS (+ registers); SigLIP has no CLS token
PREFIX = {"dinov2": 1, "dinov2_registers": 3, "clip": 1, "clip_vision": 1, "siglip": 0}
KINDS = list(PREFIX)


def _pixels(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _reference(encoder: VisionEncoder, pixels: torch.Tensor):
    with torch.no_grad():
        return encoder.model(pixel_values=pixels, output_hidden_states=True)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layer", [-2, -1, 1, 3])
def test_grid_is_hidden_state_of_layer_without_prefix_tokens(tiny_vit_dirs, kind, layer):
    encoder = build_vision_encoder(str(tiny_vit_dirs[kind]), layer=layer)
    pixels = _pixels()
    with torch.no_grad():
        features = encoder(pixels)
    reference = _reference(encoder, pixels)
    assert features.grid.shape == (2, 16, 32) == (2, encoder.num_tokens, encoder.feature_dim)
    torch.testing.assert_close(features.grid, reference.hidden_states[layer][:, PREFIX[kind]:], rtol=0, atol=0)
    torch.testing.assert_close(features.pooled, reference.pooler_output, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["dinov2", "clip", "siglip"])
def test_stopping_at_the_layer_skips_later_blocks(tiny_vit_dirs, kind):
    encoder = build_vision_encoder(str(tiny_vit_dirs[kind]), layer=1, compute_pooled=False)
    calls = []
    for i, block in enumerate(encoder.backbone.blocks):
        block.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
    with torch.no_grad():
        features = encoder(_pixels())
    assert calls == [0] and features.pooled is None
    torch.testing.assert_close(features.grid, _reference(encoder, _pixels()).hidden_states[1][:, PREFIX[kind]:])


def test_default_layer_is_penultimate_and_out_of_range_is_rejected(tiny_vit_dirs):
    folder = str(tiny_vit_dirs["dinov2"])
    assert build_vision_encoder(folder).layer == -2
    for bad in (0, 4, -4):
        with pytest.raises(ConfigError, match="out of range"):
            build_vision_encoder(folder, layer=bad)


def test_frozen_by_default_and_stays_in_eval_when_parent_trains(tiny_vit_dirs):
    encoder = build_vision_encoder(str(tiny_vit_dirs["clip"]))
    parent = nn.Sequential(encoder, nn.Linear(2, 2))
    parent.train()
    assert all(not p.requires_grad for p in encoder.parameters())
    assert encoder.training and not encoder.model.training
    assert all(not m.training for m in encoder.model.modules())
    assert encoder.cacheable
    encoder.set_frozen(False)
    parent.train()
    assert all(p.requires_grad for p in encoder.parameters()) and encoder.model.training
    assert not encoder.cacheable


@pytest.mark.parametrize("kind", ["dinov2", "clip", "siglip"])
def test_adapters_are_identity_at_init_and_trainable(tiny_vit_dirs, kind):
    folder = str(tiny_vit_dirs[kind])
    plain = build_vision_encoder(folder)
    adapted = build_vision_encoder(folder, adapter_dim=12)
    pixels = _pixels()
    adapted.train()  # adapter dropout active: still a no-op because the up-projection is zero
    torch.testing.assert_close(adapted(pixels).grid, plain(pixels).grid, rtol=0, atol=0)
    # one adapter per block feeding the grid (layer -2 of 3: blocks 0 and 1)
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable == {f"adapters.{i}.{w}.weight" for i in range(2) for w in ("down", "up")}
    assert sum(p.numel() for p in adapted.adapters.parameters()) == 2 * 2 * 32 * 12
    assert not adapted.cacheable and "adapters12" in adapted.identity
    # pretrained names are unchanged; adapters are registered under their own prefix
    assert {n for n in adapted.state_dict() if not n.startswith("adapters.")} == set(plain.state_dict())

    optimizer = torch.optim.SGD(adapted.adapters.parameters(), lr=1.0)
    adapted.eval()
    adapted(pixels).grid.square().mean().backward()
    assert all(adapted.adapters[i].up.weight.grad.abs().sum() > 0 for i in range(2))
    optimizer.step()
    assert not torch.allclose(adapted(pixels).grid, plain(pixels).grid)


def test_adapter_matches_memvp_formula_on_one_block(tiny_vit_dirs):
    """With an adapter, block(x) = block_without(x) + s * up(gelu(down(norm2(h)))), h the post-attention state."""
    encoder = build_vision_encoder(str(tiny_vit_dirs["clip_vision"]), layer=1, adapter_dim=4, compute_pooled=False)
    adapter = encoder.adapters[0]
    ffn_inputs = []
    encoder.backbone.blocks[0].mlp.register_forward_hook(lambda m, a, o: ffn_inputs.append(a[0]))
    with torch.no_grad():
        base = encoder(_pixels()).grid  # up-projection still zero
        nn.init.normal_(adapter.up.weight)
        got = encoder(_pixels()).grid
        delta = adapter.scale * adapter.up(nn.functional.gelu(adapter.down(ffn_inputs[0])))  # (2, 17, 32)
    torch.testing.assert_close(ffn_inputs[0], ffn_inputs[1])
    torch.testing.assert_close(got, base + delta[:, 1:], rtol=1e-5, atol=1e-6)


class _TinyCNN(nn.Module):
    """Stands in for EfficientNet: extract_features gives (B, C, h, w); has a BatchNorm and a head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self._fc = nn.Linear(8, 5)

    def extract_features(self, x):
        return torch.relu(self.bn(self.conv(x)))


def _cnn_backbone() -> VisionBackbone:
    torch.manual_seed(0)
    model = _TinyCNN().eval()
    prep = ImagePreprocessing("bicubic", IMAGENET_MEAN, IMAGENET_STD, resize_to=(32, 32))
    return VisionBackbone(model=model, kind="cnn", weights_id="tiny-cnn", preprocessing=prep, feature_dim=8,
                          stride=4, classifier=model._fc)


def test_cnn_grid_is_flattened_final_map_and_pooled_its_mean():
    encoder = VisionEncoder(_cnn_backbone())
    pixels = _pixels()
    with torch.no_grad():
        fmap = encoder.model.extract_features(pixels)  # (2, 8, 8, 8)
        features = encoder(pixels)
    assert encoder.num_tokens == 64 and features.grid.shape == (2, 64, 8)
    torch.testing.assert_close(features.grid[:, 9], fmap[:, :, 1, 1])  # row-major: token 9 = (row 1, col 1)
    torch.testing.assert_close(features.pooled, fmap.mean(dim=(2, 3)))
    nn.Sequential(encoder).train()
    assert not encoder.model.bn.training  # frozen BatchNorm keeps its statistics
    with pytest.raises(ConfigError, match="final feature map"):
        VisionEncoder(_cnn_backbone(), layer=-2)
    with pytest.raises(ConfigError, match="ViT blocks"):
        VisionEncoder(_cnn_backbone(), adapter_dim=12)


def test_preprocess_then_forward_on_pil_images(tiny_vit_dirs):
    encoder = build_vision_encoder(str(tiny_vit_dirs["siglip"]))
    images = [Image.new("L", (40, 50), 128), Image.new("RGBA", (64, 20), (255, 0, 0, 128))]
    pixels = encoder.preprocess(images)
    assert pixels.shape == (2, 3, 32, 32) and pixels.dtype == torch.float32
    assert encoder(pixels).grid.shape == (2, 16, 32)


def test_identity_names_weights_layer_and_preprocessing(tiny_vit_dirs):
    folder = str(tiny_vit_dirs["dinov2"])
    a, b = build_vision_encoder(folder, layer=-2), build_vision_encoder(folder, layer=-1)
    assert a.identity == build_vision_encoder(folder, layer=-2).identity  # stable
    assert a.identity != b.identity and str(tiny_vit_dirs["dinov2"].resolve()) in a.identity
    assert "layer-2" in a.identity and a.backbone.preprocessing.describe() in a.identity
    assert a.identity != build_vision_encoder(str(tiny_vit_dirs["clip"]), layer=-2).identity


def test_backbone_dispatch_uses_config_model_type(tiny_vit_dirs):
    from transformers import CLIPVisionModel, Dinov2WithRegistersModel, SiglipVisionModel

    assert isinstance(load_vision_backbone(str(tiny_vit_dirs["clip"])).model, CLIPVisionModel)
    assert isinstance(load_vision_backbone(str(tiny_vit_dirs["siglip"])).model, SiglipVisionModel)
    registers = load_vision_backbone(str(tiny_vit_dirs["dinov2_registers"]))
    assert isinstance(registers.model, Dinov2WithRegistersModel) and registers.num_prefix_tokens == 3
