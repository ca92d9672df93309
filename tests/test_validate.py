"""The TOML files are checked by declarative schemas (edgeprof.validate, pydantic): every
problem is one line naming the file and the key."""
import pytest

from edgeprof.errors import InputError
from edgeprof.inputspec import InputSpec, load_spec


@pytest.mark.parametrize("body, message", [
    ('layout = "NWHC"', r"spec.toml: layout: 'NWHC' must be NCHW or NHWC"),
    ('layuot = "NCHW"', r"spec.toml: layuot: unknown key \(known: channel_order, data_layout"),
    ("std = [0.2, 0.0, 0.2]", r"spec.toml: std: must not contain 0"),
    ('scale = "1/255"', r"spec.toml: scale: expected a number, got str"),
    ("resize = [224]", r"spec.toml: resize: must be \[H, W\] with positive integers"),
    ('dtype = "float"', r"spec.toml: dtype: 'float' must be one of float32"),
    ('channel_order = "GBR"', r"spec.toml: channel_order: 'GBR' must be RGB or BGR"),
])
def test_bad_inputspec_files_name_file_and_key(tmp_path, body, message):
    f = tmp_path / "spec.toml"
    f.write_text(body + "\n")
    with pytest.raises(InputError, match=message) as exc:
        load_spec(f)
    assert "\n" not in str(exc.value)


def test_a_good_inputspec_round_trips(tmp_path):
    f = tmp_path / "spec.toml"
    f.write_text('layout = "nchw"\nchannel_order = "bgr"\nscale = 0.00392156862745098\n'
                 "mean = [0.485, 0.456, 0.406]\nstd = [0.229, 0.224, 0.225]\nresize = [224, 224]\n")
    spec = load_spec(f)
    assert spec.layout == "NCHW" and spec.channel_order == "BGR" and spec.resize == (224, 224)
    assert spec.mean == (0.485, 0.456, 0.406)
    assert InputSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("body, message", [
    ("[measure]\nthreds = [1, 2]", r"s.toml: measure.threds: unknown key \(known: accuracy, .*threads"),
    ("[mesure]\nthreads = 1", r"s.toml: mesure: unknown key \(known: data, decide, measure"),
    ('[measure]\nlatency = "yes"', r"s.toml: measure.latency: expected true or false, got str"),
    ('[decide]\nrequre = "accuracy_drop<=1%"', r"s.toml: decide.requre: unknown key \(known: objectives, require\)"),
    ('[data]\nevl = "eval.npz"', r"s.toml: data.evl: unknown key \(known: calib, eval, field, finetune\)"),
    ("[measure]\nrobustness = 3", r"s.toml: measure.robustness: expected a table, got int"),
])
def test_bad_sweep_files_name_file_section_and_key(tmp_path, body, message):
    """A typo in [measure] was silently ignored before (its default measured instead)."""
    from edgeprof.sweeps.plan import load_plan
    f = tmp_path / "s.toml"
    f.write_text('[model]\npath = "m.onnx"\n' + body + "\n")
    with pytest.raises(InputError, match=message) as exc:
        load_plan(f)
    assert "\n" not in str(exc.value)
