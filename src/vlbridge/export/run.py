"""``vlbridge export``: a run's checkpoint as a Hugging Face model folder, or as its trained tensors with a model card.

Formats:

- ``hf``: a folder ``from_pretrained`` loads. ``mlp -> input_space`` runs (the ``llava`` preset) become a
  ``LlavaForConditionalGeneration`` with its ``LlavaProcessor`` (:mod:`vlbridge.export.llava`); an option LLaVA cannot
  express refuses the export, naming it. Bridges no transformers class computes (MemVP, BLIP-2 with vlbridge's
  encoders, Perceiver, tiny-LM, EVE, cross-attention) get the ``bridge`` export, and the result says why no class
  exists.
- ``bridge``: the run's trained tensors (``trained.safetensors``), ``recipe.yaml`` and ``meta.json`` (so the folder is
  also a vlbridge checkpoint: ``vlbridge generate --run DIR``), with BLIP-2's Q-Former also under Hugging Face names.

Both write a model card (``README.md``: :mod:`vlbridge.export.card`). The folder is written beside ``out`` and renamed
into place, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import save_file

from vlbridge.bridges.spec import BridgeSpec
from vlbridge.errors import ConfigError
from vlbridge.export.blip2 import FILE as BLIP2_FILE
from vlbridge.export.blip2 import blip2_names
from vlbridge.export.card import model_card
from vlbridge.export.formats import LLAVA, hf_class, why_no_hf_class
from vlbridge.recipe import load_recipe, save_recipe
from vlbridge.train.checkpoint import META, RECIPE, WEIGHTS, commit_folder, read_meta, read_state, resolve_checkpoint

FORMATS = ("hf", "bridge")

LLAVA_USAGE = """This folder is a Hugging Face `{cls}` with its `LlavaProcessor` (image preprocessing of the encoder,
the LM's tokenizer with `<image>` added, and a chat template giving vlbridge's prompt layout); greedy generation
gives the answers `vlbridge generate` gives.

```python
from PIL import Image
from transformers import AutoProcessor, {cls}

model = {cls}.from_pretrained("{folder}")
processor = AutoProcessor.from_pretrained("{folder}")  # with torchvision installed: backend="pil" (vlbridge's pixels)
messages = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "What is in the image?"}}]}}]
text = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(text=text, images=Image.open("image.png"), return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=32)
print(processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
```

{lora}The vlbridge recipe the model was trained with is `recipe.yaml`."""

BRIDGE_USAGE = """{why}.

This folder holds the bridge's trained tensors (`trained.safetensors`, vlbridge's parameter names), `recipe.yaml` and
`meta.json`: it is a vlbridge checkpoint, loaded onto the same language model and encoder (checked by fingerprint) by
`vlbridge generate --run {folder} --image IMG --prompt TEXT` or `vlbridge.runs.load_run("{folder}")`."""


@dataclass
class Exported:
    folder: Path
    format: str  # what was written: hf | bridge
    hf_class: str | None  # the transformers class the folder loads as, or None
    note: str | None  # why no Hugging Face class was written (when format hf was asked for and none exists)


def export_run(run: str | Path, out: str | Path, format: str = "hf", overwrite: bool = False) -> Exported:
    """Export the checkpoint of ``run`` (a run folder or a checkpoint folder) to the folder ``out``."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; valid: {list(FORMATS)}")
    checkpoint = resolve_checkpoint(run)
    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not overwrite:
        raise ConfigError(f"{out} exists and is not empty; choose another folder or pass --overwrite")
    if out.resolve() == checkpoint.resolve() or checkpoint.resolve() in out.resolve().parents:
        raise ConfigError(f"{out} is inside the checkpoint {checkpoint}; export to another folder")
    recipe = load_recipe(checkpoint / RECIPE)
    meta = read_meta(checkpoint)
    spec = BridgeSpec(**meta["spec"]) if "spec" in meta else _spec(recipe)
    cls = hf_class(spec) if format == "hf" else None
    note = None
    if format == "hf" and cls is None:
        encoder = meta.get("vision_encoder") or {}
        note = why_no_hf_class(spec, recipe.model.vision_encoder, encoder.get("layer"))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if cls == LLAVA:
            _write_llava(checkpoint, recipe, spec, tmp, out)
        else:
            _write_bridge(checkpoint, recipe, spec, meta, tmp, out, note)
        if out.exists() and not any(out.iterdir()):
            out.rmdir()  # an empty folder the user made is replaced
        commit_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Exported(out, "hf" if cls else "bridge", cls, note)


def _spec(recipe) -> BridgeSpec:
    from vlbridge.bridges.registry import resolve_spec

    return resolve_spec(recipe.model)


def _write_llava(checkpoint: Path, recipe, spec: BridgeSpec, folder: Path, out: Path) -> None:
    from vlbridge.export.llava import write_llava
    from vlbridge.runs import load_run

    # the weights as loaded (fp32), whatever precision model.precision would run them in on this machine
    built, _ = load_run(checkpoint, ["model.precision=fp32"])
    write_llava(built, recipe, folder)
    lora = (f"The LM's LoRA (rank {recipe.model.lora_rank}) is merged into its weights.\n\n"
            if recipe.model.lora_rank else "")
    save_recipe(recipe, folder / RECIPE)
    (folder / "README.md").write_text(model_card(checkpoint, recipe, spec,
                                                 LLAVA_USAGE.format(cls=LLAVA, folder=out, lora=lora),
                                                 library="transformers"))


def _write_bridge(checkpoint: Path, recipe, spec: BridgeSpec, meta: dict, folder: Path, out: Path,
                  note: str | None) -> None:
    """The checkpoint's inference tensors, recipe and meta (training-only tensors, such as EVE's aligner, stay behind),
    BLIP-2's Q-Former also under Hugging Face names, and the model card."""
    if meta.get("untrained"):
        # new tensors the run did not train (from model.init_from, e.g. a frozen stage-1 part) are not in its
        # checkpoint: the export carries them too, so it stands alone
        state = _complete_state(checkpoint, meta, folder)
    else:
        shutil.copyfile(checkpoint / WEIGHTS, folder / WEIGHTS)
        if (checkpoint / META).is_file():
            shutil.copyfile(checkpoint / META, folder / META)
        state = read_state(checkpoint, meta)
    shutil.copyfile(checkpoint / RECIPE, folder / RECIPE)
    if hf_class(spec) is not None:
        why = (f"`--format hf` writes {spec.pair} runs as a Hugging Face {hf_class(spec)} (refusing, by name, an option "
               "it has no field for)")
    else:
        layer = (meta.get("vision_encoder") or {}).get("layer")
        why = note or why_no_hf_class(spec, recipe.model.vision_encoder, layer)
    if (spec.connector, spec.injection) == ("qformer", "input_space"):
        save_file({k: v.contiguous() for k, v in blip2_names(state).items()}, str(folder / BLIP2_FILE),
                  metadata={"format": "pt"})
    usage = BRIDGE_USAGE.format(why=why[0].upper() + why[1:], folder=out)
    (folder / "README.md").write_text(model_card(checkpoint, recipe, spec, usage))


def _complete_state(checkpoint: Path, meta: dict, folder: Path) -> dict:
    """Every new tensor of the run's model (trained, or from ``model.init_from``) written as its checkpoint, with
    ``meta.json`` saying so; the pretrained LM and encoder stay out, as in every checkpoint."""
    import json

    from vlbridge.runs import load_run
    from vlbridge.train.identity import SOURCES, TRAINING_ONLY
    from vlbridge.train.parameter_groups import group_of

    built, _ = load_run(checkpoint)
    state = {n: p.detach().contiguous() for n, p in built.model.named_parameters()
             if group_of(n) not in SOURCES + TRAINING_ONLY}
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})
    meta = dict(meta, untrained=[], parameters={k: list(v.shape) for k, v in state.items()})
    (folder / META).write_text(json.dumps(meta, indent=1))
    return state
