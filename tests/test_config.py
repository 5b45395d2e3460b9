"""``FCAMConfig.overridden``: fields changed inside a ``with`` block, validated first, always restored."""

from __future__ import annotations

import pytest

from fcam_plugin import FCAMConfig


def test_overridden_sets_then_restores_also_after_an_error() -> None:
    config = FCAMConfig(cam_gate=False, gate_dilation=0.25)
    with config.overridden(cam_gate=True, gate_dilation=0.0) as inside:
        assert inside is config and config.cam_gate and config.gate_dilation == 0.0
    assert not config.cam_gate and config.gate_dilation == 0.25
    with pytest.raises(RuntimeError, match="boom"), config.overridden(flip_weight=0.0):
        raise RuntimeError("boom")
    assert config.flip_weight == FCAMConfig().flip_weight


@pytest.mark.parametrize(("changes", "error", "match"), [
    ({"gate_dilation": 2}, ValueError, "`gate_dilation`"),
    ({"fg_seed_power": -1.0}, ValueError, "`fg_seed_power`"),
    ({"flip_average": "no"}, TypeError, "`flip_average`"),
    ({"seed_flip": 1}, TypeError, "`seed_flip`"),
    ({"cam_gate": 1}, TypeError, "`cam_gate`"),
    ({"no_such_field": 1}, TypeError, "no_such_field"),
])
def test_overridden_rejects_bad_values_before_changing_anything(changes: dict, error: type, match: str) -> None:
    config = FCAMConfig()
    with pytest.raises(error, match=match), config.overridden(**changes):
        pass
    assert config == FCAMConfig()


def test_gates_says_which_calls_the_class_gate_applies_to() -> None:
    assert [FCAMConfig(cam_gate="auto").gates(classes_named=named) for named in (True, False)] == [True, False]
    assert [FCAMConfig(cam_gate=True).gates(classes_named=named) for named in (True, False)] == [True, True]
    assert [FCAMConfig(cam_gate=False).gates(classes_named=named) for named in (True, False)] == [False, False]
