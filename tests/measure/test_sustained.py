"""Sustained load and energy: the analysis as pure functions on synthetic rounds, the power
readers on a fake sysfs tree, and a real worker run of a few seconds against a fake tree whose
temperature, frequency and power a test thread changes over time. This machine exposes no
thermal zones, cpufreq, hwmon or readable RAPL: the fake tree is the only way to see a board's
sensors here (it is a fake, said so)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
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


class Clock:
    """The run's clock, under the test's control: it moves only when the board runs a round."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class Board:
    """Forwards to a real worker; each round is one tick (0.1 s) of the test's clock, and before
    it ``tick(k)`` changes the fake board (sysfs tree, meter file) for round k."""

    def __init__(self, w, clock, tick, after=None):
        self.w, self.clock, self.tick, self.after = w, clock, tick, after
        self.rounds, self.sampled = 0, []

    def request(self, cmd, **kw):
        if cmd != "round":
            return self.w.request(cmd, **kw)
        self.rounds += 1
        self.tick(self.rounds)
        self.sampled.append(kw.get("snapshots", True))
        self.clock.t += 0.1
        rep = self.w.request(cmd, **kw)
        if self.after is not None:
            self.after(self.sampled[-1])
        return rep


def test_a_real_sustained_run_against_a_changing_fake_board(models_dir, tmp_path):
    """A real worker under load for 2 s of the test's clock (20 rounds of 0.1 s), reading a fake
    board: before each round the board heats by 1 C, and from the 7th round on its clock is
    capped at 1.0 GHz; an INA219-like sensor reads 5 W. Rounds alternate sampled and unsampled;
    the unsampled ones read no sensor."""
    root = tmp_path / "board"
    _tree(root, 50000, 1500000, 5_000_000, 0)
    (root / "sys/class/powercap/intel-rapl:0/energy_uj").unlink()     # power readings only

    def tick(k):
        _tree(root, 50000 + 1000 * k, 1000000 if k > 6 else 1500000, 5_000_000, 0)
        (root / "sys/class/powercap/intel-rapl:0/energy_uj").unlink()
    clock = Clock()
    with start_local_worker("sustained") as w:
        w.request("load", path=str(models_dir / "cnn.onnx"), sysfs_root=str(root))
        board = Board(w, clock, tick)
        res = run_sustained(board, duration_s=2.0, round_s=0.01, window_s=0.3, idle_s=0.05,
                            clock=clock)
    s = res["summary"]
    assert not res["interrupted"] and board.rounds == 20 and len(res["rounds"]) == 20
    assert s["windows"] == 7 and s["temp_end_c"] > s["temp_start_c"]
    assert s["first_frequency_drop_s"] == pytest.approx(0.6)    # round 7 starts at 0.6 s
    assert board.sampled == [True, False] * 10
    assert all((r["before"] is None) == (not r["sampled"]) for r in res["rounds"])
    e = res["energy"]
    assert e["available"] and e["source"] == "power readings" and e["n_rounds"] == 10
    assert e["mean_w"] == pytest.approx(5.0) and e["idle_w"] == pytest.approx(5.0)
    calls = [len(r["samples_s"]) for r in res["rounds"] if r["sampled"]]
    assert e["joules_per_inference"] == pytest.approx(np.mean([5.0 * 0.1 / c for c in calls]))
    o = res["sampling_overhead"]
    assert o["n_pairs"] == 10 and o["ratio"] > 0
    assert o["pair_ratio_ci"][0] <= o["pair_ratio"] <= o["pair_ratio_ci"][1]


METER = """import sys
# stands in for a USB power meter: prints the watts the test writes into a file
watts = open(sys.argv[1]).read().strip()
with open(sys.argv[2], "a") as log:
    log.write(watts + "\\n")
print(watts + " W")
"""


def test_an_energy_command_is_sampled_on_the_host_and_aligned_to_rounds(models_dir, tmp_path):
    """energy_command runs as an argument list (the meter file's name holds shell syntax that a
    shell would mangle): idle power before the run, then 3 W for the first second of the test's
    clock (rounds 1-10) and 6 W after; readings are aligned to the sampled rounds by their
    timestamps. A sampled round lasts until the meter has given a reading, as a round of a
    second would on a board; unsampled rounds get none (the meter is paused)."""
    import time
    script = tmp_path / "meter.py"
    script.write_text(METER)
    watts, log = tmp_path / "meter $HOME; w.txt", tmp_path / "log.txt"
    watts.write_text("1.5")
    log.write_text("")
    clock = Clock()
    seen = []

    def tick(k):
        watts.write_text("3.0" if k <= 10 else "6.0")
        seen.append(len(log.read_text().split()))

    def after(sampled):
        deadline = time.monotonic() + 20
        while sampled and len(log.read_text().split()) == seen[-1] and time.monotonic() < deadline:
            time.sleep(0.005)
    with start_local_worker("sustained meter") as w:
        w.request("load", path=str(models_dir / "cnn.onnx"))
        board = Board(w, clock, tick, after)
        res = run_sustained(board, duration_s=2.0, round_s=0.01, window_s=0.5, idle_s=0.05,
                            clock=clock, energy_command=[sys.executable, str(script), str(watts),
                                                         str(log)], sample_period_s=0.01)
    e = res["energy"]
    assert e["available"] and e["source"] == "energy_command" and e["n_rounds"] == 10
    assert e["idle_w"] == pytest.approx(1.5)
    meter = [r.get("meter_w") for r in res["rounds"]]
    assert meter[1::2] == [None] * 10                      # unsampled rounds: no reading
    # a reading may start just before its round's tick (the value of the round before), so
    # rounds 3-9 read 3 W and 13-19 read 6 W whatever the scheduling
    assert meter[2:9:2] == [pytest.approx(3.0)] * 4 and meter[12::2] == [pytest.approx(6.0)] * 4
    assert 3.0 <= e["mean_w"] <= 6.0
    assert "energy_command" in res["sampling_overhead"]["what"]


def test_a_failing_energy_command_is_refused_in_one_line(tmp_path):
    from edgeprof.errors import InputError
    from edgeprof.measure.sustained import EnergySampler
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nprint('no meter', file=sys.stderr)\nsys.exit(3)\n")
    with pytest.raises(InputError, match=r"exited with status 3: no meter$"):
        EnergySampler([sys.executable, str(bad)]).read()
    words = tmp_path / "words.py"
    words.write_text("print('hello')\n")
    with pytest.raises(InputError, match="expected watts"):
        run_sustained(None, 1.0, energy_command=[sys.executable, str(words)])  # before any round
    with pytest.raises(InputError, match="no such program"):
        EnergySampler([str(tmp_path / "absent")]).read()


def test_parse_watts():
    from edgeprof.measure.sustained import parse_watts
    assert parse_watts("3.2") == 3.2 and parse_watts("x\n3.2 W\n") == 3.2
    assert parse_watts("3200 mW") == pytest.approx(3.2)
    assert parse_watts("") is None and parse_watts("3.2 V") is None


def test_energy_command_in_a_target_file(tmp_path):
    from edgeprof.errors import InputError
    from edgeprof.targets.config import load_target_file
    f = tmp_path / "pi.toml"
    f.write_text('host = "pi"\nenergy_command = ["/usr/local/bin/meter", "--watts"]\n')
    assert load_target_file(f).energy_command == ("/usr/local/bin/meter", "--watts")
    for bad in ('"meter --watts"', "[]", '[""]', "[1]"):
        f.write_text(f'host = "pi"\nenergy_command = {bad}\n')
        with pytest.raises(InputError, match="energy_command: expected an argument list"):
            load_target_file(f)


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
    assert rec["windows"] and rec["sustained"]["burst_p50_s"] > 0   # how many: the box's load
    assert sum(w["n"] for w in rec["windows"]) == rec["stats"]["n"]
    assert rec["n_rounds"] >= 1 and rec["sustained"]["steady_n"] > 0
    assert rec["cooldown"]["rule"] == "wait 0.2 s" and rec["stats"]["n"] > 0
    assert "available" in rec["energy"] and "sustained cnn.onnx on local" in r.output
    r = CliRunner().invoke(cli, args)                         # a rerun resumes: nothing again
    assert r.exit_code == 0 and "skipped" in r.output and len(list(read_records(res))) == 1
    has_sensor = bool(list(Path("/sys/class/thermal").glob("thermal_zone*/temp")))
    r = CliRunner().invoke(cli, args[:6] + ["--cooldown", "55C", "-q"])
    if not has_sensor:   # this VM: no thermal zone, so a temperature cannot be waited for
        assert r.exit_code == 1 and "exposes no temperature sensor" in r.output


def test_burst_configurations_cool_down_one_at_a_time(models_dir, tmp_path):
    """--cooldown on a burst profile: each configuration waits, then is measured on its own;
    every record states the cool-down it had. A temperature needs a sensor: refused in one line
    where the target has none, honoured (200 C is reached at once) where it has one."""
    from click.testing import CliRunner

    from edgeprof.cli import cli
    from edgeprof.results import read_records
    from tests.conftest import FAST
    res = tmp_path / "r.jsonl"
    models = [str(models_dir / "cnn.onnx"), str(models_dir / "mlp.onnx")]
    r = CliRunner().invoke(cli, ["profile", *models, "--cooldown", "0.1s", "--results", str(res),
                                 *FAST])
    assert r.exit_code == 0, r.output
    recs = list(read_records(res))
    assert len(recs) == 2 and all(x["mode"] == "burst" for x in recs)
    assert all(x["cooldown"]["rule"] == "wait 0.1 s" and x["cooldown"]["waited_s"] >= 0.1
               for x in recs)
    has_sensor = bool(list(Path("/sys/class/thermal").glob("thermal_zone*/temp")))
    r = CliRunner().invoke(cli, ["profile", models[0], "--cooldown", "95C", *FAST])
    if has_sensor:
        assert r.exit_code == 0, r.output
    else:   # this VM: no thermal zone
        assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
        assert "local exposes no temperature sensor" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["profile", models[0], "--cooldown", "hot", *FAST])
    assert r.exit_code != 0 and "expected a duration" in r.output


def test_raw_samples_beyond_the_cap_go_to_a_side_file(tmp_path):
    """The record keeps at most ``cap_per_window`` samples per window; every sample goes to
    samples/<sha256>.npz beside the results (read back without pickle)."""
    from types import SimpleNamespace

    from edgeprof.measure.sustained import sampling_overhead, sustained_record
    rounds = synthetic(n_rounds=12, heat_after=6)
    for i, r in enumerate(rounds):
        r["sampled"] = i % 2 == 0
    wins = windows(rounds, 4.0)
    res = {"rounds": rounds, "windows": wins, "summary": summarize(wins), "window_s": 4.0,
           "energy": energy(rounds, []), "interrupted": False, "duration_s": 12.0,
           "sampling_overhead": sampling_overhead(rounds, "test")}
    ref = SimpleNamespace(id="v" * 64, root_id=None, name="m", path="m.onnx", format="onnx",
                          model_bytes=1, zlib_bytes=1)
    rec = sustained_record(ref, "local", 1, 1, res, {}, None, None, cap_per_window=100,
                           side_dir=tmp_path)
    assert all(len(w["samples_s"]) == 100 and w["samples_capped"] for w in rec["windows"])
    with np.load(tmp_path / rec["samples_file"], allow_pickle=False) as z:
        assert z["samples_s"].size == rec["stats"]["n"] == sum(len(r["samples_s"]) for r in rounds)
    assert rec["sustained"]["steady_p50_s"] == 150e-6 and rec["sustained"]["steady_n"] > 0
    lo, hi = rec["sustained"]["steady_p50_ci_s"]
    assert lo <= 150e-6 <= hi
    # pairs: (0,1) (2,3) (4,5) cool, (6,7) ... hot: each pair at one heat, so no overhead
    assert rec["sampling_overhead"]["n_pairs"] == 6 and rec["sampling_overhead"]["ratio"] == 1.0
