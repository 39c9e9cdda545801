"""MultiTaskNet structure, normalisation, validation and init (small inputs: structure, not size)."""

import json

import pytest
import torch
from torch import nn

from mtl_perception.model import ModelConfig, MultiTaskNet, build_model, preset_config
from mtl_perception.model.backbone import Fusion, InvertedResidual

H, W = 64, 128


def _inputs(n=1, h=H, w=W, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, h, w, generator=g) * 255
    flow = torch.cat([torch.randn(n, 2, h, w, generator=g) * 5, torch.rand(n, 1, h, w, generator=g)], 1)
    return image, flow


def test_full_model_outputs_shapes_and_dtypes():
    torch.manual_seed(0)
    model = build_model().eval()
    image, flow = _inputs(2)
    with torch.no_grad():
        out = model(image, flow)
    assert set(out) == {"depth", "semantic", "motion"}
    assert out["depth"].shape == (2, 1, H, W)
    assert out["semantic"].shape == (2, 5, H, W)
    assert out["motion"].shape == (2, 2, H, W)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize(
    "tasks,streams",
    [
        (("depth",), ("image",)),
        (("semantic",), ("image",)),
        (("motion",), ("flow", "image")),
        (("semantic", "depth"), ("flow",)),
        (("motion",), ("image",)),
    ],
)
def test_task_and_stream_subsets_build(tasks, streams):
    model = build_model(tasks=tasks, streams=streams, num_semantic_classes=19).eval()
    assert model.tasks == tuple(t for t in ("depth", "semantic", "motion") if t in tasks)
    image, flow = _inputs()
    with torch.no_grad():
        out = model(image, flow if "flow" in streams else None)
    assert set(out) == set(tasks)
    if "semantic" in tasks:
        assert out["semantic"].shape[1] == 19
    # A single stream has no fusion layer; two streams have exactly one.
    assert (model.fusion is None) == (len(streams) == 1)


def test_ti_structure_matches_reference():
    model = build_model()
    # TI's published parameter count for the (1,5,2) tv model is 3.65 M (hand count, conv + BN affine).
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(3.65e6, rel=0.005)
    for stem in model.stems.values():
        # conv3x3 s2 -> 32, IR t1 16 (no expansion conv), IR t6 24 s2, IR t6 24 (residual)
        assert stem[0][0].out_channels == 32 and stem[0][0].stride == (2, 2)
        assert isinstance(stem[1], InvertedResidual) and len(stem[1].conv) == 2
        assert len(stem[2].conv) == 3 and stem[2].conv[1][0].stride == (2, 2) and not stem[2].use_residual
        assert stem[3].use_residual and stem.out_channels == 24
    # Fusion: dw3x3 on 48 ch + BN, 1x1 48 -> 24 + BN, no activation anywhere.
    assert isinstance(model.fusion, Fusion)
    assert model.fusion[0][0].groups == 48 and model.fusion[1][0].out_channels == 24
    assert not any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in model.fusion.modules())
    # Trunk: stride 16 total, no dilation, ends at 320 ch.
    assert model.trunk.out_channels == 320
    strides = [m.stride[0] for m in model.trunk.modules() if isinstance(m, nn.Conv2d) and m.stride[0] > 1]
    assert len(strides) == 2  # 32-ch and 64-ch stages; with the stem's two: output stride 16
    assert all(m.dilation == (1, 1) for m in model.trunk.modules() if isinstance(m, nn.Conv2d))
    x = torch.zeros(1, 24, 16, 32)
    assert model.trunk.eval()(x).shape == (1, 320, 4, 8)
    dec = model.decoders["semantic"]
    assert len(dec.aspp.branches) == 4 and dec.aspp.project[0].in_channels == 1024
    assert [b[0][0].dilation[0] for b in list(dec.aspp.branches)[1:]] == [2, 4, 6]
    assert isinstance(dec.aspp.dropout, nn.Dropout2d) and dec.aspp.dropout.p == 0.2
    assert dec.skip[0].in_channels == 24 and dec.skip[0].out_channels == 48
    assert dec.predict_dw[0].groups == 304 and dec.predict.bias is None and dec.predict.out_channels == 5


def test_ericsun_block_adds_expansion_conv():
    model = build_model(always_expand=True)
    block = model.stems["image"][1]
    assert len(block.conv) == 3 and block.conv[0][0].out_channels == 32


def test_normalisation_inside_the_model():
    model = build_model().eval()
    seen = {}
    for name, stem in model.stems.items():
        stem.register_forward_pre_hook(lambda m, args, name=name: seen.__setitem__(name, args[0].clone()))
    image, flow = _inputs()
    with torch.no_grad():
        model(image, flow)
    torch.testing.assert_close(seen["image"], (image - 128) / 64)
    expected_flow = torch.cat([flow[:, :2] / 16, (flow[:, 2:] - 0.5) / 0.5], 1)
    torch.testing.assert_close(seen["flow"], expected_flow)


def test_activation_is_configurable():
    relu6 = build_model(activation="relu6")
    assert any(isinstance(m, nn.ReLU6) for m in relu6.modules())
    assert not any(isinstance(m, nn.ReLU6) for m in build_model().modules())
    with pytest.raises(ValueError, match="activation"):
        build_model(activation="gelu")


def test_init_is_ti_and_seeded():
    torch.manual_seed(3)
    a = build_model(preset="lite")
    torch.manual_seed(3)
    b = build_model(preset="lite")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    conv = a.trunk[-1].conv[0][0]  # 1x1 conv, fan_out = out_channels
    std = (2.0 / conv.out_channels) ** 0.5
    assert conv.weight.std().item() == pytest.approx(std, rel=0.1)
    for m in a.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(image=torch.zeros(1, 4, H, W)), "image"),
        (dict(image=torch.zeros(3, H, W)), "image"),
        (dict(image=torch.zeros(1, 3, H, W, dtype=torch.uint8)), "image.*dtype"),
        (dict(image=torch.zeros(1, 3, 60, W)), "multiples of 16"),
        (dict(image=torch.zeros(1, 3, H, W), flow=None), "flow.*None"),
        (dict(image=torch.zeros(1, 3, H, W), flow=torch.zeros(1, 2, H, W)), r"flow.*\(N, 3, 64, 128\)"),
        (dict(image=torch.zeros(1, 3, H, W), flow=torch.zeros(1, 3, 32, W)), "flow"),
        (dict(image=torch.zeros(1, 3, H, W), flow=torch.zeros(2, 3, H, W)), "flow.*batch"),
        (dict(image=[[0.0]], flow=torch.zeros(1, 3, H, W)), "image"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_tensor(kwargs, match):
    model = build_model(preset="lite").eval()
    kwargs.setdefault("flow", torch.zeros(1, 3, H, W))
    with pytest.raises(ValueError, match=match):
        model(**kwargs)


def test_config_round_trip_and_presets():
    config = preset_config("lite", tasks=("motion", "depth"), num_semantic_classes=7)
    assert config.tasks == ("depth", "motion")
    d = json.loads(json.dumps(config.to_dict()))
    assert ModelConfig.from_dict(d) == config
    assert MultiTaskNet(ModelConfig.from_dict(d)).config == config
    with pytest.raises(ValueError, match="preset"):
        preset_config("huge")
    with pytest.raises(ValueError, match="tasks"):
        build_model(tasks=("depth", "optical"))
    with pytest.raises(ValueError, match="streams"):
        build_model(streams=())
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        ModelConfig.from_dict({"preset": "ti", "bogus": 1})
