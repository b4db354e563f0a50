import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from needle_nav_training.export import (OPSET, export_onnx, metadata, normalise, set_metadata,
                                        write_parity_fixture)
from needle_nav_training.model import VesselUNet

NORM = {"clip_hu": [-900.0, 900.0], "mean_hu": -100.0, "std_hu": 380.0}
WINDOWS = {"contrast": {"artery": [300, 420], "vein": [90, 290], "aorta": [140, 360]},
           "plain": {"artery": [12, 70], "vein": [14, 78], "aorta": [13, 73]}}


def _meta(**training):
    return metadata([2.0, 2.0, 2.0], [48, 48, 48], NORM, WINDOWS,
                    {"seed": 1, "torch": torch.__version__, "git_commit": "x", "validation_dice": {}, "date": "d",
                     **training})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    net = VesselUNet(base=4)
    # Non-trivial BatchNorm statistics, so folding them is exercised.
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(2, 1, 16, 16, 16) * 2 + 0.5)
    net.eval()
    path = tmp_path_factory.mktemp("m") / "m.onnx"
    export_onnx(net, path, _meta())
    return net, path


def test_export_has_opset_17_dynamic_axes_and_metadata(exported):
    _, path = exported
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    assert {o.domain: o.version for o in m.opset_import}.get("", 0) == OPSET
    info = json.loads({p.key: p.value for p in m.metadata_props}["needle_nav"])
    assert info["patch_size_zyx"] == [48, 48, 48] and info["orientation"] == "LPS"
    assert info["class_names"] == ["background", "artery", "vein", "aorta"]
    assert info["hu_windows"]["plain"]["vein"] == [14.0, 78.0]
    names = [i.name for i in m.graph.input], [o.name for o in m.graph.output]
    assert names == (["ct"], ["probabilities"])
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, False, True, True, True]


def test_metadata_can_be_replaced_without_touching_the_graph(exported, tmp_path):
    _, path = exported
    copy = tmp_path / "c.onnx"
    copy.write_bytes(path.read_bytes())
    set_metadata(copy, _meta(validation_dice={"contrast": {"artery": 0.5}}))
    a, b = onnx.load(str(path)), onnx.load(str(copy))
    assert a.graph == b.graph
    info = json.loads(b.metadata_props[0].value)
    assert info["training"]["validation_dice"]["contrast"]["artery"] == 0.5


def test_parity_fixture_matches_and_is_written(exported, tmp_path):
    net, path = exported
    rng = np.random.default_rng(0)
    hu = rng.normal(0, 300, (16, 16, 16))
    diff = write_parity_fixture(net, path, hu, NORM, tmp_path, "test")
    assert diff <= 1e-4
    meta = json.loads((tmp_path / "meta.json").read_text())
    hu16 = np.fromfile(tmp_path / "input_hu.i16", "<i2").reshape(meta["input_hu"]["shape_zyx"])
    p = np.fromfile(tmp_path / "torch_probabilities.f32", "<f4").reshape(meta["torch_probabilities"]["shape"])
    (q,) = ort.InferenceSession(str(path)).run(None, {"ct": normalise(hu16, NORM)[None, None]})
    assert np.abs(p - q).max() <= 1e-4


def test_normalisation_clips_then_z_scores():
    x = normalise(np.array([-2000, 0, 2000], np.int16), NORM)
    assert np.allclose(x, [(-900 + 100) / 380, 100 / 380, 1000 / 380])
