"""Sustained load and energy: the analysis as pure functions on synthetic rounds, the power
readers on a fake sysfs tree, and a real worker run of a few seconds against a fake tree whose
temperature, frequency and power a test thread changes over time. This machine exposes no
thermal zones, cpufreq, hwmon or readable RAPL: the fake tree is the only way to see a board's
sensors here (it is a fake, said so)."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgeprof.measure.sustained import energy, run_sustained, summarize, windows
from edgeprof.targets import worker as W
from edgeprof.targets.client import start_local_worker


def snap(t, temp=None, hz=None, flags=(), watts=None, joules=None):
    return {"t_unix_s": t, "temp_c": {"cpu": temp} if temp is not None else None,
            "cur_hz": {"0": hz} if hz else None,
            "throttled": {"value": 1, "flags": list(flags)} if flags else None,
            "power_w": {"ina219:power1": watts} if watts is not None else None,
            "energy_j": {"rapl:package-0": joules} if joules is not None else None}


def synthetic(n_rounds=30, heat_after=10):
    """1 s rounds: 100 us per call for 10 s, then the board caps its clock and calls take 150 us."""
    rounds = []
    for i in range(n_rounds):
        hot = i >= heat_after
        lat = 150e-6 if hot else 100e-6
        calls = int(1.0 / lat)
        rounds.append({"t0": float(i), "t1": float(i + 1), "samples_s": [lat] * calls,
                       "before": snap(i, 50 + i, 1.5e9 if not hot else 1.0e9,
                                      ("arm frequency capped",) if hot else (), joules=5.0 * i),
                       "after": snap(i + 1, 50 + i + 1, 1.5e9 if not hot else 1.0e9,
                                     joules=5.0 * (i + 1))})
    return rounds


def test_burst_against_steady_state_and_first_throttle():
    wins = windows(synthetic(), window_s=5.0)
    assert len(wins) == 6 and wins[0]["p50_s"] == 100e-6 and wins[-1]["p50_s"] == 150e-6
    s = summarize(wins)
    assert s["burst_p50_s"] == 100e-6 and s["steady_p50_s"] == 150e-6
    assert s["steady_over_burst"] == pytest.approx(1.5)
    assert s["first_throttle_s"] == 10.0 and s["first_frequency_drop_s"] == 10.0
    assert s["temp_start_c"] == 55 and s["temp_max_c"] == 80   # the hottest reading per window


def test_energy_from_counters_and_from_power_readings():
    rounds = synthetic()
    idle = [snap(-2.0, joules=0.0), snap(-1.0, joules=2.0)]     # 2 W idle
    e = energy(rounds, idle)
    # 5 W for 1 s: 10,000 calls (cool) or 6,666 (hot) per round
    assert e["mean_w"] == pytest.approx(5.0) and e["idle_w"] == pytest.approx(2.0)
    per = [5.0 / len(r["samples_s"]) for r in rounds]
    assert e["joules_per_inference"] == pytest.approx(sum(per) / len(per))
    lo, hi = e["joules_per_inference_ci"]
    assert lo <= e["joules_per_inference"] <= hi
    assert e["active_joules_per_inference"] == pytest.approx(e["joules_per_inference"] * 0.6)
    no_counter = [dict(r, before=snap(r["t0"], watts=3.0), after=snap(r["t1"], watts=3.0))
                  for r in rounds]
    assert energy(no_counter, [])["mean_w"] == pytest.approx(3.0)
    none = [dict(r, before=snap(r["t0"]), after=snap(r["t1"])) for r in rounds]
    assert energy(none, [])["available"] is False


def _tree(root: Path, temp_milli: int, khz: int, microwatts: int, uj: int) -> None:
    for rel, text in (("sys/class/thermal/thermal_zone0/type", "cpu-thermal"),
                      ("sys/class/thermal/thermal_zone0/temp", str(temp_milli)),
                      ("sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq", str(khz)),
                      ("sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", "1800000"),
                      ("sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "ondemand"),
                      ("sys/class/hwmon/hwmon0/name", "ina219"),
                      ("sys/class/hwmon/hwmon0/power1_input", str(microwatts)),
                      ("sys/class/powercap/intel-rapl:0/name", "package-0"),
                      ("sys/class/powercap/intel-rapl:0/energy_uj", str(uj)),
                      ("sys/class/powercap/intel-rapl:0:0/energy_uj", str(uj // 2))):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")   # sysfs reads are atomic: never show half a value
        tmp.write_text(text + "\n")
        tmp.replace(p)


def test_power_readers_on_a_fake_tree(tmp_path):
    _tree(tmp_path, 45000, 1500000, 3_200_000, 7_000_000)
    watts, joules = W.power(str(tmp_path))
    assert watts == {"ina219:power1": 3.2}
    assert joules == {"rapl:package-0": 7.0}          # the package, not its subzone again
    s = W.snapshot(str(tmp_path))
    assert s["power_w"] and s["energy_j"] and s["temp_c"] == {"cpu-thermal:thermal_zone0": 45.0}


def test_a_real_sustained_run_against_a_changing_fake_board(models_dir, tmp_path):
    """A real worker under load for about two seconds, reading a fake board whose clock the test
    controls: before each round the board heats by 1 C, and from the 7th round on its clock is
    capped at 1.0 GHz; an INA219-like sensor reads 5 W."""
    root = tmp_path / "board"
    _tree(root, 50000, 1500000, 5_000_000, 0)
    (root / "sys/class/powercap/intel-rapl:0/energy_uj").unlink()     # power readings only

    class Board:  # forwards to the worker; each round is one tick of the board's clock
        def __init__(self, w):
            self.w, self.rounds = w, 0

        def request(self, cmd, **kw):
            if cmd == "round":
                self.rounds += 1
                _tree(root, 50000 + 1000 * self.rounds,
                      1000000 if self.rounds > 6 else 1500000, 5_000_000, 0)
                (root / "sys/class/powercap/intel-rapl:0/energy_uj").unlink()
            return self.w.request(cmd, **kw)
    with start_local_worker("sustained") as w:
        w.request("load", path=str(models_dir / "cnn.onnx"), sysfs_root=str(root))
        board = Board(w)
        res = run_sustained(board, duration_s=2.0, round_s=0.1, window_s=0.3, idle_s=0.1)
    s = res["summary"]
    assert not res["interrupted"] and board.rounds >= 7 and s["windows"] >= 2
    assert s["temp_end_c"] > s["temp_start_c"]
    assert s["first_frequency_drop_s"] is not None and s["first_frequency_drop_s"] > 0
    assert len(res["rounds"]) == board.rounds
    e = res["energy"]
    assert e["available"] and e["mean_w"] == pytest.approx(5.0) and e["idle_w"] == pytest.approx(5.0)
    calls = sum(len(r["samples_s"]) for r in res["rounds"])
    assert calls > 0 and e["joules_per_inference"] > 0


def test_profile_sustained_records_windows_and_resumes(models_dir, tmp_path):
    from click.testing import CliRunner

    from edgeprof.cli import cli
    from edgeprof.results import read_records
    res = tmp_path / "r.jsonl"
    args = ["profile", str(models_dir / "cnn.onnx"), "--sustained", "2s", "--window", "0.5s",
            "--cooldown", "0.2s", "--results", str(res), "-q"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    (rec,) = read_records(res)
    assert rec["mode"] == "sustained" and rec["kind"] == "latency" and not rec["interrupted"]
    assert len(rec["windows"]) >= 2 and rec["sustained"]["burst_p50_s"] > 0
    assert rec["cooldown"]["rule"] == "wait 0.2 s" and rec["stats"]["n"] > 0
    assert "available" in rec["energy"] and "sustained cnn.onnx on local" in r.output
    r = CliRunner().invoke(cli, args)                         # a rerun resumes: nothing again
    assert r.exit_code == 0 and "skipped" in r.output and len(list(read_records(res))) == 1
    has_sensor = bool(list(Path("/sys/class/thermal").glob("thermal_zone*/temp")))
    r = CliRunner().invoke(cli, args[:6] + ["--cooldown", "55C", "-q"])
    if not has_sensor:   # this VM: no thermal zone, so a temperature cannot be waited for
        assert r.exit_code == 1 and "exposes no temperature sensor" in r.output
