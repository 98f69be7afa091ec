"""`vlbridge info` names the encoder layer the grid comes from, also when the recipe leaves it to the default."""

from __future__ import annotations

import yaml

from vlbridge_cli.main import main


def test_info_prints_the_layer_used(tmp_path, tiny_llama_dir, tiny_dinov2_dir, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"model": {"language_model": str(tiny_llama_dir),
                                              "vision_encoder": str(tiny_dinov2_dir)}}))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "(layer -2, the encoder's default)" in out and "layer None" not in out
    assert main(["info", str(path), "--set", "model.vision_layer=-1"]) == 0
    assert f"vision encoder {tiny_dinov2_dir} (layer -1) |" in capsys.readouterr().out
