"""Sustained load in sweeps: ranking by steady-state latency and energy per inference (decisions
on hand-made records), and a real sweep with ``sustained`` and ``cooldown`` in ``[measure]``:
one sustained record per configuration, Ctrl-C keeps an interrupted record that a rerun
measures again while it skips what was finished."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.errors import InputError
from edgeprof.results import new_record, read_records
from edgeprof.sweeps.decide import decide_records
from edgeprof.sweeps.recommend import parse_requirements
from tests.sweep_files import demo_sweep


def burst(vid, p50):
    return new_record("latency", variant_id=vid, root_id="a", target="local", threads=1, batch=1,
                      model={"name": vid}, samples_s=[p50] * 50, warnings=[],
                      stats={"p50_s": p50, "p50_ci_s": [p50 * 0.99, p50 * 1.01], "p99_s": p50,
                             "p99_ci_s": [p50, p50], "n": 50})


def sustained(vid, steady, mj=None, reason="no readable power or energy sensor"):
    e = ({"available": True, "joules_per_inference": mj * 1e-3, "mean_w": 3.0, "n_rounds": 20,
          "joules_per_inference_ci": [mj * 0.9e-3, mj * 1.1e-3], "source": "power readings"}
         if mj is not None else {"available": False, "reason": reason})
    return new_record("latency", mode="sustained", variant_id=vid, root_id="a", target="local",
                      threads=1, batch=1, model={"name": vid}, samples_s=[], interrupted=False,
                      stats={"p50_s": steady, "n": 100}, energy=e,
                      sustained={"burst_p50_s": steady / 2, "steady_p50_s": steady,
                                 "steady_p50_ci_s": [steady * 0.99, steady * 1.01],
                                 "steady_n": 100, "first_throttle_s": 30.0})


def test_steady_state_ranks_and_energy_constrains():
    """a: fastest in a burst but throttles to 4 ms; b: 2 ms burst, 2.5 ms steady. After a
    sustained run the recommendation ranks by steady state (b); an energy limit only a meets
    turns it to a; both on the frontier of steady p50 against energy."""
    recs = [burst("a", 1e-3), burst("b", 2e-3), sustained("a", 4e-3, mj=3.0),
            sustained("b", 2.5e-3, mj=7.0)]
    dec = decide_records(recs)
    assert dec["rank"] == "steady_p50_s" and dec["recommendation"]["chosen"] == "b"
    assert "steady-state p50" in dec["recommendation"]["reasons"][0]
    rows = {r["variant_id"]: r for r in dec["rows"]}
    assert rows["a"]["p50_s"] == 1e-3 and rows["a"]["steady_p50_s"] == 4e-3   # burst kept apart
    assert rows["b"]["energy_per_inference_j"] == pytest.approx(7e-3)
    dec = decide_records(recs, require="energy_per_inference<=5mJ",
                         objectives=[("steady_p50", "min"), ("energy_per_inference", "min")])
    assert dec["recommendation"]["chosen"] == "a"
    assert "energy_per_inference<=5mJ: 3 mJ" in dec["recommendation"]["reasons"]
    assert set(dec["frontier"]["local"]["frontier"]) == {"a", "b"}
    assert dec["frontier"]["local"]["objectives"] == [("steady_p50_s", "min"),
                                                      ("energy_per_inference_j", "min")]


def test_energy_without_a_sensor_is_unavailable_and_never_passes():
    recs = [burst("a", 1e-3), sustained("a", 2e-3, reason="no sensor on this VM")]
    dec = decide_records(recs, require="energy<=5mJ")
    row = dec["rows"][0]
    assert row["energy_per_inference_j"] is None if "energy_per_inference_j" in row else True
    assert row["unavailable"] == {"energy_per_inference_j": "no sensor on this VM"}
    assert dec["recommendation"]["chosen"] is None
    assert dec["recommendation"]["missing"] == ["energy<=5mJ: unavailable (no sensor on this VM)"]
    without = decide_records([burst("a", 1e-3)], require="energy<=5mJ")   # no sustained run
    assert without["rank"] == "p50_s" and without["recommendation"]["chosen"] is None
    assert without["recommendation"]["missing"] == ["energy<=5mJ: not measured"]


def test_energy_and_steady_constraint_parsing():
    (c,) = parse_requirements("energy_per_inference<=500uJ")
    assert (c.key, c.value) == ("energy_per_inference_j", pytest.approx(5e-4))
    (c,) = parse_requirements("steady_p50<=5ms")
    assert (c.key, c.value) == ("steady_p50_s", pytest.approx(5e-3))
    with pytest.raises(InputError, match="expected an energy such as 5mJ"):
        parse_requirements("energy<=5W")


def test_sweep_with_sustained_load_resumes_and_remeasures_an_interrupted_run(tmp_path):
    from edgeprof.sweeps.plan import load_plan
    from edgeprof.sweeps.runner import SweepRunner
    from edgeprof.variants.cache import Cache

    f = demo_sweep(tmp_path / "s.toml", precisions='["fp32"]',
                   require="energy_per_inference<=5mJ",
                   measure='accuracy = false\nprocesses = 1\nsustained = "1s"\nwindow = "0.25s"\n'
                           'cooldown = "0.05s"')
    out, cache = tmp_path / "out", tmp_path / "cache"

    def ctrl_c(desc, frac):   # Ctrl-C during the first sustained run
        if "sustained load" in desc:
            raise KeyboardInterrupt
    runner = SweepRunner(load_plan(f, out), Cache(cache), progress=ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    runner.store.release()
    recs = list(read_records(out / "results.jsonl"))
    (cut,) = [r for r in recs if r.get("interrupted")]
    assert cut["mode"] == "sustained-interrupted" and cut["kind"] == "latency"
    assert len(cut["windows"]) >= 1   # the windows measured before Ctrl-C are kept
    burst_recs = [r for r in recs if r["kind"] == "latency" and r["mode"] == "burst"]
    assert len(burst_recs) == 1 and all(r["cooldown"]["rule"] == "wait 0.05 s" for r in burst_recs)

    args = ["sweep", str(f), "--out", str(out), "--cache-dir", str(cache), "-q"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    recs = list(read_records(out / "results.jsonl"))
    sus = [r for r in recs if r["kind"] == "latency" and r["mode"] == "sustained"]
    assert len(sus) == 1 and {r["variant_id"] for r in sus} == {r["variant_id"] for r in burst_recs}
    assert cut["variant_id"] in {r["variant_id"] for r in sus}    # measured again
    assert all(r["cooldown"]["rule"] == "wait 0.05 s" and r["sustained"]["steady_p50_s"] > 0
               for r in sus)
    assert sum(r["kind"] == "latency" and r["mode"] == "burst" for r in recs) == 1  # resumed
    dec = json.loads((out / "decision.json").read_text())
    assert dec["rank"] == "steady_p50_s" and all(row["steady_p50_s"] > 0 for row in dec["rows"])
    for row in dec["rows"]:   # energy where this machine has a sensor, else why not
        assert row.get("energy_per_inference_j") or row["unavailable"]["energy_per_inference_j"]
    if not any(row.get("energy_per_inference_j") for row in dec["rows"]):
        assert dec["recommendation"]["chosen"] is None
        assert "unavailable (" in dec["recommendation"]["missing"][0]
    assert (out / "sustained.png").stat().st_size > 0
    assert "## Sustained load" in (out / "summary.md").read_text()
    assert "steady_p50_s" in (out / "results.csv").read_text().splitlines()[0]


def test_sweep_file_checks_sustained_keys(tmp_path):
    from edgeprof.sweeps.plan import load_plan
    f = demo_sweep(tmp_path / "s.toml", measure='sustained = "10m"\ncooldown = "55C"')
    plan = load_plan(f)
    assert plan.sustained == {"duration_s": 600.0, "window_s": 10.0,
                              "cooldown": {"below_c": 55.0}}
    assert plan.cooldown == {"below_c": 55.0}
    for bad, msg in (('sustained = "soon"', "expected a duration"),
                     ('window = "5s"', "window applies to sustained"),
                     ('sustained = "1m"\ncooldown = 55', "cooldown must be a string")):
        demo_sweep(f, measure=bad)
        with pytest.raises(InputError, match=msg):
            load_plan(f)
    assert Path(f).exists()
