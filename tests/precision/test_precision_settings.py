"""How the two precision settings resolve: auto by the hardware (or the environment, or the run being resumed),
train.precision following model.precision, FSDP, bad values at recipe time, and a warning when bf16 is asked for
on hardware that only emulates it."""

from __future__ import annotations

import logging

import pytest
import torch

from vlbridge import precision
from vlbridge.errors import ConfigError
from vlbridge.precision import AUTO_ENV, bf16_support, resolve
from vlbridge.recipe import load_recipe

AMX = frozenset({"avx512f", "amx_tile", "amx_bf16", "avx512_bf16"})
AVX512_BF16 = frozenset({"avx512f", "avx512_bf16"})
AVX2 = frozenset({"avx2", "fma"})


@pytest.fixture
def cpu(monkeypatch):
    """``cpu(flags)`` makes this machine's CPU look like one with those /proc/cpuinfo flags; auto is not pinned."""
    monkeypatch.delenv(AUTO_ENV, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")

    def set_flags(flags):
        monkeypatch.setattr(precision, "cpu_flags", lambda: flags)

    return set_flags


@pytest.mark.parametrize("flags, fast, named", [(AMX, True, "amx_bf16"), (AVX512_BF16, True, "avx512_bf16"),
                                                (AVX2, False, "neither AMX nor AVX-512-bf16")])
def test_a_cpu_is_fast_in_bf16_with_amx_or_avx512_bf16(flags, fast, named):
    support = bf16_support("cpu", flags)
    assert support.fast is fast and named in support.why


def test_flags_without_avx512_kernels_are_not_fast(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    support = bf16_support("cpu", AMX)
    assert not support.fast and "AVX2 kernels" in support.why


def test_cpuinfo_flags_are_read_from_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: x\nflags\t\t: fpu avx512f amx_bf16\nbugs\t\t: none\n")
    assert precision.cpu_flags.__wrapped__(str(info)) == {"fpu", "avx512f", "amx_bf16"}
    assert precision.cpu_flags.__wrapped__(str(tmp_path / "missing")) == frozenset()


def test_auto_is_bf16_where_fast_and_fp32_elsewhere(cpu):
    cpu(AMX)
    chosen = resolve("auto", "auto", "cpu")
    assert (chosen.frozen, chosen.compute) == ("bf16", "bf16") and "amx_bf16" in chosen.why
    assert chosen.frozen_dtype == torch.bfloat16
    cpu(AVX2)
    chosen = resolve("auto", "auto", "cpu")
    assert (chosen.frozen, chosen.compute) == ("fp32", "fp32") and "neither AMX" in chosen.why


def test_train_precision_auto_follows_model_precision_and_explicit_values_win(cpu):
    cpu(AVX2)  # explicit values are not judged by the hardware rule (only warned about)
    assert (resolve("bf16", "auto", "cpu").compute, resolve("fp32", "auto", "cpu").compute) == ("bf16", "fp32")
    chosen = resolve("fp32", "bf16", "cpu")
    assert (chosen.frozen, chosen.compute, chosen.why) == ("fp32", "bf16", "")
    assert chosen.activations == "bf16" and resolve("fp32", "fp32", "cpu").activations == "fp32"


def test_the_environment_pins_auto(cpu, monkeypatch):
    cpu(AMX)
    monkeypatch.setenv(AUTO_ENV, "fp32")
    chosen = resolve("auto", "auto", "cpu")
    assert chosen.frozen == "fp32" and chosen.why == f"{AUTO_ENV}=fp32"
    monkeypatch.setenv(AUTO_ENV, "fp16")
    with pytest.raises(ConfigError, match=rf"{AUTO_ENV}='fp16'; valid: \['fp32', 'bf16'\]"):
        resolve("auto", "auto", "cpu")


def test_bf16_on_hardware_without_it_warns_and_runs(cpu, caplog):
    cpu(AVX2)
    with caplog.at_level(logging.WARNING, logger="vlbridge.precision"):
        chosen = resolve("bf16", "auto", "cpu")
    assert chosen.frozen == "bf16"
    assert "runs emulated, usually slower than fp32" in caplog.text and "neither AMX nor AVX-512-bf16" in caplog.text
    caplog.clear()
    cpu(AMX)
    with caplog.at_level(logging.WARNING, logger="vlbridge.precision"):
        resolve("bf16", "bf16", "cpu")
    assert caplog.text == ""


def test_a_resumed_run_keeps_its_recorded_precision(cpu):
    cpu(AVX2)  # auto would now give fp32: the run trained in bf16 keeps bf16
    recorded = resolve("bf16", "bf16", "cpu").to_meta() | {"requested": ["auto", "auto"], "why": "the CPU has amx_bf16"}
    chosen = resolve("auto", "auto", "cpu", recorded=recorded)
    assert (chosen.frozen, chosen.compute, chosen.why) == ("bf16", "bf16", "the CPU has amx_bf16")
    cpu(AMX)  # a run from before the setting existed trained in fp32, and resumes so
    chosen = resolve("auto", "auto", "cpu", recorded={})
    assert (chosen.frozen, chosen.compute) == ("fp32", "fp32") and "records no precision" in chosen.why


def test_fsdp_takes_fp32_for_auto_and_refuses_bf16(cpu):
    cpu(AMX)
    assert resolve("auto", "auto", "cpu", fsdp=True).frozen == "fp32"
    assert resolve("auto", "bf16", "cpu", fsdp=True).compute == "bf16"
    with pytest.raises(ConfigError, match="cannot run under FSDP"):
        resolve("bf16", "auto", "cpu", fsdp=True)


@pytest.mark.parametrize("key", ["model.precision", "train.precision"])
def test_an_unknown_value_is_refused_when_the_recipe_is_read(key):
    with pytest.raises(ConfigError, match=rf"{key}='fp16'; valid: \['auto', 'fp32', 'bf16'\]"):
        load_recipe(None, [f"{key}=fp16"])
    with pytest.raises(ConfigError, match=r"valid: \['auto', 'fp32', 'bf16'\]"):
        resolve("half", "auto", "cpu")


def test_both_settings_default_to_auto_and_the_report_line_says_what_was_chosen(cpu):
    recipe = load_recipe(None, [])
    assert (recipe.model.precision, recipe.train.precision) == ("auto", "auto")
    cpu(AMX)
    line = resolve(recipe.model.precision, recipe.train.precision, "cpu").describe()
    assert line == ("precision: frozen weights and their activations bf16, trained parts' products bf16 (autocast); "
                    "trained parameters, gradients, optimizer state and loss fp32 (model.precision=auto, "
                    "train.precision=auto; auto: the CPU has amx_bf16, avx512_bf16)")


def test_autocast_only_when_the_trained_parts_compute_in_bf16():
    with resolve("fp32", "bf16", "cpu").autocast("cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with resolve("bf16", "fp32", "cpu").autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
