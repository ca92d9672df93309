"""CPU features from /proc/cpuinfo: the worker's reader on fixtures transcribed from public dumps
(tests/fixtures/cpuinfo/SOURCES.md), and where the features show (targets check, the report)."""
from __future__ import annotations

import ast
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeprof.cli import cli
from edgeprof.report.write import index_html, summary_md
from edgeprof.targets import describe_cpu_features
from edgeprof.targets import worker as W
from edgeprof.targets.client import WORKER_PATH

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cpuinfo"

# What each machine has, from public facts about the CPU (not from the parser):
# - EPYC 7302P, Zen 2: AVX2/FMA/F16C, no AVX-512, no VNNI, no AMX.
# - Xeon Silver 4214R, Cascade Lake: AVX-512 F/BW and AVX-512 VNNI; no AVX512_BF16 (Cooper
#   Lake), no AVX512_FP16 / AMX (Sapphire Rapids).
# - Pi 4, Cortex-A72 (Armv8.0-A): Advanced SIMD only; no dot product, no fp16 arithmetic.
# - Pi 5, Cortex-A76 (Armv8.2-A): dot product (asimddp) and fp16 arithmetic (fphp, asimdhp);
#   no i8mm, SVE or BF16 (Armv8.6 / v9 features).
# - 32-bit Raspbian (armv7l kernel) on a Cortex-A53: `neon`, no dot product.
EXPECTED = {
    "epyc_avx2": ("x86_64", ["avx2", "f16c", "fma"], False, False),
    "xeon_vnni": ("x86_64", ["avx2", "avx512_vnni", "avx512bw", "avx512f", "f16c", "fma"],
                  True, False),
    "pi4_a72": ("aarch64", ["asimd"], False, False),
    "pi5_a76": ("aarch64", ["asimd", "asimddp", "asimdhp", "fphp"], True, True),
    "pi_32bit": ("arm", ["neon"], False, False),
}


def _tree(tmp_path: Path, name: str) -> str:
    root = tmp_path / name
    (root / "proc").mkdir(parents=True)
    shutil.copy(FIXTURES / f"{name}.txt", root / "proc" / "cpuinfo")
    return str(root)


def test_every_fixture_is_cited_and_verbatim():
    sources = (FIXTURES / "SOURCES.md").read_text()
    for name in EXPECTED:
        assert f"`{name}.txt`" in sources
        text = (FIXTURES / f"{name}.txt").read_text()
        assert not any(line.startswith("#") for line in text.splitlines())  # as the kernel writes


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_features_of_each_fixture(tmp_path, name):
    arch, flags, int8_dot, fp16 = EXPECTED[name]
    cf = W.cpu_features(_tree(tmp_path, name))
    assert cf["arch"] == arch
    assert cf["flags"] == flags
    assert cf["int8_dot"] is int8_dot
    assert cf["fp16_arith"] is fp16
    no_dot = any(n.startswith("no int8 dot product") for n in cf["notes"])
    assert no_dot is (not int8_dot)


def test_flags_are_the_kernel_spelling_and_sorted(tmp_path):
    root = tmp_path / "spr"
    (root / "proc").mkdir(parents=True)
    # Sapphire Rapids-like flags (kernel names), in the kernel's own order
    (root / "proc" / "cpuinfo").write_text(
        "processor\t: 0\nflags\t\t: fpu lm fma avx2 avx512f avx512bw avx512_bf16 avx_vnni "
        "avx512_vnni avx512_fp16 amx_bf16 amx_tile amx_int8 f16c\n")
    cf = W.cpu_features(str(root))
    assert cf["flags"] == sorted(["fma", "avx2", "avx512f", "avx512bw", "avx512_bf16", "avx_vnni",
                                  "avx512_vnni", "avx512_fp16", "amx_bf16", "amx_tile",
                                  "amx_int8", "f16c"])
    assert cf["int8_dot"] is True and cf["fp16_arith"] is True


def test_a_flag_missing_on_one_cpu_is_not_claimed(tmp_path):
    root = tmp_path / "mixed"
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "cpuinfo").write_text(
        "processor\t: 0\nFeatures\t: fp asimd asimddp\n\nprocessor\t: 1\nFeatures\t: fp asimd\n")
    cf = W.cpu_features(str(root))
    assert cf["flags"] == ["asimd"] and cf["int8_dot"] is False


def test_missing_cpuinfo_is_none_and_unavailable(tmp_path):
    root = str(tmp_path / "empty")
    os.makedirs(root)
    assert W.cpu_features(root) is None
    env = W.static_env(root)
    assert env["cpu_features"] is None and "cpu_features" in env["unavailable"]


def test_cpuinfo_without_flags_is_unknown_not_false(tmp_path):
    root = tmp_path / "odd"
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "cpuinfo").write_text("processor\t: 0\ncpu model\t: something\n")
    cf = W.cpu_features(str(root))
    assert cf["arch"] is None  # a fake root never falls back to this machine's platform
    assert cf["flags"] == [] and cf["int8_dot"] is None and cf["fp16_arith"] is None


def test_static_env_on_a_fake_root_records_the_features(tmp_path):
    env = W.static_env(_tree(tmp_path, "pi5_a76"))
    assert env["cpu_features"]["arch"] == "aarch64" and env["cpu_features"]["int8_dot"] is True
    assert "cpu_features" not in env["unavailable"]


def test_worker_still_parses_as_python_39():
    ast.parse(WORKER_PATH.read_text(), feature_version=(3, 9))


def test_one_line_description(tmp_path):
    epyc = describe_cpu_features(W.cpu_features(_tree(tmp_path, "epyc_avx2")))
    assert epyc == "avx2 f16c fma (no int8 dot product: int8 may be slower than fp32)"
    pi5 = describe_cpu_features(W.cpu_features(_tree(tmp_path, "pi5_a76")))
    assert pi5 == "asimd asimddp asimdhp fphp (int8 dot product; fp16 arithmetic)"
    assert "virtual machine" in describe_cpu_features(
        W.cpu_features(_tree(tmp_path, "xeon_vnni")))
    assert describe_cpu_features(None) == "unavailable"
    assert "\n" not in epyc + pi5


def test_targets_check_local_shows_the_features():
    r = CliRunner().invoke(cli, ["targets", "check", "local"])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if "cpu features" in ln]
    assert len(lines) == 1
    assert W.cpu_features() is None or " ".join(W.cpu_features()["flags"]) in lines[0]


def _records(env: dict) -> list[dict]:
    return [{"kind": "latency", "target": "board<1>", "env": env, "warnings": [],
             "model": {"name": "m"}, "threads": 1, "batch": 1}]


def test_report_names_the_features_after_the_cpu_model(tmp_path):
    cf = W.cpu_features(_tree(tmp_path, "epyc_avx2"))
    env = {"cpu_model": "AMD EPYC 7302P <16-Core>", "cpu_features": cf, "cores": 32,
           "os": "Linux", "python": "3.11", "versions": {}, "unavailable": []}
    dec = {"rows": [], "recommendation": {"reasons": []}, "baseline": ""}
    md = summary_md("t", dec, _records(env), [])
    line = next(ln for ln in md.splitlines() if ln.startswith("- target"))
    assert "AMD EPYC 7302P <16-Core>, features avx2 f16c fma (no int8 dot product" in line
    html = index_html("t", dec, _records(env), tmp_path, [])
    assert "AMD EPYC 7302P &lt;16-Core&gt;, features avx2 f16c fma (no int8 dot product" in html
    assert "<16-Core>" not in html


def test_report_of_records_without_features_is_unchanged(tmp_path):
    env = {"cpu_model": "X", "cores": 1, "os": "Linux", "python": "3.9", "versions": {},
           "unavailable": []}
    dec = {"rows": [], "recommendation": {"reasons": []}, "baseline": ""}
    assert "- target `board<1>`: X, 1 cores" in summary_md("t", dec, _records(env), [])
