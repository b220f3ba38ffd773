"""probe_weight_reload: the seed experiment on the simulator, whose finding (as measured on
the ANE) is that a reload does not pick up a rewritten weight file."""

import pytest

import anemone


def test_the_simulator_finds_weights_baked_in_at_compile_time():
    r = anemone.probe_weight_reload(device="sim", channels=16, spatial=32)
    assert isinstance(r, anemone.WeightReloadResult)
    assert (r.device, r.channels, r.spatial, r.sim_reload) == ("sim", 16, 32, "snapshot")
    assert r.verdict == "FAIL"
    assert r.max_change == 0.0 and not r.reload_failed
    assert r.compile_load_ms > 0 and r.unload_ms >= 0 and r.reload_ms >= 0
    by_method = {m.method: m for m in r.methods}
    assert list(by_method) == ["disk-reload", "recompile", "dynamic"]
    assert not by_method["disk-reload"].took_effect and by_method["disk-reload"].speedup is None
    for name in ("recompile", "dynamic"):
        m = by_method[name]
        assert m.took_effect and m.max_error < 0.1 and m.speedup > 0
    # The fields `anemone probe weight-reload --json` prints.
    d = r.to_dict()
    assert d["verdict"] == "FAIL" and d["methods"][0]["method"] == "disk-reload"


def test_a_simulator_that_rereads_the_files_succeeds():
    r = anemone.probe_weight_reload(device="sim", channels=16, spatial=32, sim_reload="reads-disk")
    assert (r.verdict, r.sim_reload) == ("SUCCESS", "reads-disk")
    assert r.methods[0].took_effect and r.methods[0].speedup is not None


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="spatial in 1..=65536"):
        anemone.probe_weight_reload(device="sim", spatial=0)
    with pytest.raises(ValueError, match="cannot be used with the ane device"):
        anemone.probe_weight_reload(device="ane", sim_reload="snapshot")
    with pytest.raises(ValueError, match="unknown reload model `sometimes`"):
        anemone.probe_weight_reload(device="sim", sim_reload="sometimes")
