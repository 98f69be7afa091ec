"""The report's parts without training: each entry's recipe builds the bridge its name says, the presets train as
the demo does, names and settings are checked, peak memory follows what a piece of work allocates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlbridge.bridges.registry import PRESETS, resolve_spec
from vlbridge.errors import ConfigError
from vlbridge.recipe import load_recipe
from vlbridge.report import memory
from vlbridge.report.bridges import (COMMON_SETTINGS, DEFAULT_PAIRS, PAIR_SETTINGS, PRESET_SETTINGS, check_names,
                                     file_name, reads_pixels)
from vlbridge.report.settings import ReportSettings, recipe_settings, signature
from vlbridge_cli.main import main


@pytest.mark.parametrize("name", [*PRESETS, *PAIR_SETTINGS])
def test_every_entry_names_its_own_bridge(name):
    settings = ReportSettings(tiny_lm="/some/tiny_lm")
    recipe = load_recipe(None, recipe_settings(settings, name, Path("/data"), Path("/runs/x")))
    spec = resolve_spec(recipe.model)
    if name in PRESETS:
        assert recipe.model.bridge == name
    else:
        assert f"{spec.connector}->{spec.injection}" == name
    assert (recipe.model.vision_encoder == "none") == reads_pixels(name)
    assert recipe.data.train == ["/data/train_short.json", "/data/train_mc-text.json", "/data/train_caption.json"]
    assert (recipe.train.steps, recipe.train.batch_size, recipe.train.output_dir) == (150, 8, "/runs/x")
    if spec.connector == "tiny_lm":
        assert spec.connector_options["language_model"] == "/some/tiny_lm"
    assert "/data" not in str(signature(settings, name))  # folders are not settings: a moved report is reused


def test_the_report_trains_the_presets_as_the_demo_does():
    from vlbridge_cli.demo import COMMON_SETTINGS as DEMO_COMMON
    from vlbridge_cli.demo import DEMO_SETTINGS

    assert COMMON_SETTINGS == DEMO_COMMON
    assert {k: PRESET_SETTINGS[k] for k in DEMO_SETTINGS} == DEMO_SETTINGS
    assert set(DEFAULT_PAIRS) <= set(PAIR_SETTINGS)


def test_names_are_checked():
    assert check_names(["llava"], ["mlp->memory_space"]) == ["llava", "mlp->memory_space"]
    with pytest.raises(ConfigError, match="unknown injection 'nowhere'.*valid: .*cross_attention"):
        check_names([], ["mlp->nowhere"])
    with pytest.raises(ConfigError, match="unknown bridge preset 'flamingo'"):
        check_names(["flamingo"], [])
    with pytest.raises(ConfigError, match="named twice"):
        check_names(["llava", "llava"], [])
    with pytest.raises(ConfigError, match="no bridge"):
        check_names([], [])
    assert file_name("perceiver->cross_attention") == "perceiver-to-cross_attention"


def test_bad_command_lines_are_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", "--out", str(out), "--pairs", "perceiver->input-space"]) == 2
    assert "unknown injection 'input-space'" in capsys.readouterr().err
    assert main(["report", "--out", str(out), "--bridge-set", "perciever->input_space:train.lr=1"]) == 2
    assert "unknown connector 'perciever'" in capsys.readouterr().err
    assert main(["report", "--out", str(out), "--bridge-set", "llava"]) == 2
    assert "BRIDGE:KEY=VALUE" in capsys.readouterr().err
    assert main(["report", "--out", str(out), "--steps", "0"]) == 2
    assert "steps must be at least 1" in capsys.readouterr().err
    assert main(["report", "--out", str(out), "--data", str(tmp_path), "--force"]) == 2
    assert "is not a Shapes export" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.skipif(not memory.supported(), reason="peak RSS is read from Linux's /proc with glibc")
def test_peak_memory_follows_what_the_work_allocates():
    def allocate(megabytes):
        x = torch.ones(megabytes * 2**20 // 4)  # float32
        del x

    allocate(256)  # freed memory kept by malloc must not hide the next peak
    assert memory.peak_rss_above_current(lambda: allocate(64)) == pytest.approx(64, abs=6)
    assert memory.peak_rss_above_current(lambda: allocate(128)) == pytest.approx(128, abs=6)
    assert memory.peak_rss_above_current(lambda: None) < 6
