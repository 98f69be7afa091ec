"""benchmarks/eve_claims.py --quick end to end on the tiny models (EVE on 56-px canvases, a 2 x 2 grid; the LLaVA-style
bridge on the tiny DINOv2's 4 x 4 grid pooled to 2 x 2): every claim measured and its JSON consistent with the runs;
a second call reuses the stored runs."""

from __future__ import annotations

import json

import pytest
from benchmark_scripts import load_script


def test_quick_mode_measures_every_claim_consistently(tiny_llama_dir, tiny_dinov2_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VLBRIDGE_CACHE", str(tmp_path / "cache"))
    script = load_script("eve_claims")
    out = tmp_path / "out"
    argv = ["--out", str(out), "--quick", "--quiet", "--image-size", "56", "--threads", "1",
            "--lm", str(tiny_llama_dir), "--teacher", str(tiny_dinov2_dir), "--encoder", str(tiny_dinov2_dir),
            "--eve-set", "model.connector_options={image_size: 56, patch: 14, pool: 2, width: 16, heads: 2}",
            "--eve-set", "model.teacher_layer=-1", "--eve-set", "model.aligner_options={every: 1, heads: 2}"]
    assert script.main(argv) == 0
    report = json.loads((out / "eve_claims.json").read_text())
    claims, runs = report["claims"], report["runs"]
    assert set(claims) == {"flops", "speed", "pal", "stability", "text", "llava"}
    assert set(runs) == set(script.RUNS)
    steps = report["settings"]["stage_steps"]
    assert steps == [2, 2, 2]
    for name, (kind, stage, pal, _) in script.RUNS.items():
        history = runs[name]["history"]
        expected = sum(steps[:2]) if name == "llava_captions" else steps[stage - 1]
        assert len(history) == expected, name
        assert all(("alignment" in h) == pal for h in history), name  # the PAL's loss exactly where it is on
    assert runs["eve_pal_stage1"]["lm_trainable"] == 0 < runs["eve_pal_stage2"]["lm_trainable"]

    pal = claims["pal"]
    loss = pal["val_caption_loss_after_stage2"]
    assert loss["with_pal"]["mean"] == runs["eve_pal_stage2"]["val_caption_loss"]["mean"]
    assert loss["with_minus_without"]["difference"] == pytest.approx(
        loss["with_pal"]["mean"] - loss["without_pal"]["mean"])  # the same images on both sides
    acc = pal["accuracy_after_stage3"]
    assert acc["with_minus_without"]["items"] == runs["eve_pal_stage3"]["accuracy"]["questions"] == 6
    assert acc["with_minus_without"]["difference"] == pytest.approx(
        acc["with_pal"]["mean"] - acc["without_pal"]["mean"])

    stability = claims["stability"]
    for key in ("from_stage1", "fresh"):
        row = stability[key]
        norms = [h["grad_norm"] for h in runs[row["run"]]["history"]]
        assert row["grad_norm_max"] == max(norms) and row["spike_count"] == len(row["spikes"])
    text = claims["text"]
    assert text["texts"] == 2 * 5  # two test images, five reference captions each
    assert text["pal_stage2"]["minus_pretrained"]["difference"] == pytest.approx(
        text["pal_stage2"]["mean"] - text["pretrained"]["mean"])
    llava = claims["llava"]
    assert llava["eve"]["steps"] == llava["llava"]["steps"] == sum(steps)
    assert llava["eve_minus_llava"]["items"] == 6

    speed = claims["speed"]
    assert speed["rows"]["eve"]["grid_cells"] == speed["rows"]["llava"]["grid_cells"] == 4  # the same grid
    assert speed["rows"]["eve"]["visual_vectors"] == 1 + 2 * 3  # CLS + 2 rows of (2 tokens + SPLIT)
    assert all(len(speed["rows"][k]["latency_s"]) == speed["repeats"] == 2 for k in ("eve", "llava"))
    assert all(r["within_1_percent"] and r["ratio"] == 1.0 for r in claims["flops"])
    assert [r["part"] for r in claims["flops"]] == ["PEL", "PAL"]

    png = out / "eve_stage2_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000  # two panels drawn
    text_out = capsys.readouterr().out
    assert "## The PAL helps" in text_out and str(png) in text_out and (out / "eve_claims.md").read_text() in text_out
    # a second call reuses every stored run, and its report still holds every claim measured with these settings
    assert script.main([*argv, "--claims", "pal"]) == 0
    assert "eve_pal_stage1: done before" in capsys.readouterr().out
    again = json.loads((out / "eve_claims.json").read_text())
    assert again["claims"] == claims and again["runs"] == runs


def test_text_and_caption_losses_do_not_depend_on_padding(tiny_llama_dir, tiny_dinov2_dir, shapes_dir, tmp_path,
                                                          monkeypatch):
    """Each text's and each image's loss is its own, whatever it is batched with (padding on either side)."""
    monkeypatch.setenv("VLBRIDGE_CACHE", str(tmp_path / "cache"))
    script = load_script("eve_claims")
    from vlbridge.data.llava_json import read_llava_json
    from vlbridge.recipe import load_recipe
    from vlbridge.runs import build_seeded

    recipe = load_recipe(script.RECIPES / "eve" / "stage1.yaml", [
        f"model.language_model={tiny_llama_dir}", "model.teacher_encoder=null", "model.aligner=null",
        "model.aligner_options={}",
        "model.connector_options={image_size: 56, patch: 14, pool: 2, width: 16, heads: 2}"])
    built = build_seeded(recipe)
    texts = ["A red circle.", "Two small blue squares at the top left and a green cross on the right."]
    together = script.text_loss(built, texts)
    alone = [script.text_loss(built, [t])["mean"] for t in texts]
    for side in ("left", "right"):
        built.tokenizer.padding_side = side
        assert list(script.text_loss(built, texts)["per_text"].values()) == pytest.approx(alone, rel=1e-5)
    assert together["mean"] == pytest.approx(sum(alone) / 2, rel=1e-5) and together["se"] > 0

    val = read_llava_json(shapes_dir / "val_caption.json", image_root=shapes_dir)[:2]
    losses = script.caption_loss(built, recipe, val)
    assert losses["images"] == 2 and losses["captions"] == sum(len(s.meta["answers"]) for s in val)
    first = script.caption_loss(built, recipe, val[:1])
    assert first["per_image"][val[0].id] == pytest.approx(losses["per_image"][val[0].id], rel=1e-5)
