"""Optional: torchvision's and timm's models, counted against torch.utils.flop_counter.FlopCounterMode.

Skipped unless torchvision (and, for its part, timm) is importable; CI installs neither. To run it:
`pip install torchvision timm && pytest tests/test_real_models.py` (about 12 minutes on 2 cores, plus the training
steps of the torchvision classification models at the end, about 7 more).

For every torchvision classification, segmentation and video model, torchvision's optical flow (RAFT small
and large: two image inputs, grid sampling), one or more models of each timm family below and timm's NaFlexViT
(an antialiased bicubic resize of its position embedding): no op runs uncounted in the `all` scope, and the
`conv`-scope MACs are exactly FlopCounterMode's total / 2 (it counts 2 FLOPs per MAC). FlopCounterMode runs with grad enabled and the
math attention backend: it has no formula for the fused CPU attention kernel
(`_scaled_dot_product_flash_attention_for_cpu`), and the math backend is what cnnprof sees on meta.
Detection models cannot run on meta (data-dependent nonzero, NMS): a few, and segmentation models, are counted
built on the CPU through the API (one real CPU pass for detection) and must be left exactly as they were.
torchvision's quantized models (torchvision.models.quantization, int8) are counted by one real CPU pass: every op
priced, and their conv-scope MACs and acts equal their float models'.
"""
import dataclasses

import pytest
import torch

import cnnprof
from tests.test_train_flops import flop_counter_backward_macs

# Out of `make test-fast`; no single model may hang the group (pytest-timeout, a dev dependency).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

torchvision = pytest.importorskip("torchvision")
from torchvision import models as tvm  # noqa: E402

IMAGE, VIDEO = (1, 3, 224, 224), (1, 3, 16, 112, 112)
# Models whose input size is fixed by their architecture (positional embeddings, pooling windows).
SHAPES = {"inception_v3": (1, 3, 299, 299), "mvit_v1_b": (1, 3, 16, 224, 224), "mvit_v2_s": (1, 3, 16, 224, 224),
          "s3d": (1, 3, 16, 224, 224), "swin3d_t": (1, 3, 16, 224, 224), "swin3d_s": (1, 3, 16, 224, 224),
          "swin3d_b": (1, 3, 16, 224, 224)}
TORCHVISION = ([(name, IMAGE, {}) for name in tvm.list_models(module=tvm)]
               + [(name, IMAGE, {"weights_backbone": None}) for name in tvm.list_models(module=tvm.segmentation)]
               + [(name, VIDEO, {}) for name in tvm.list_models(module=tvm.video)])

# At least one model per timm family: CNNs, ViTs, hierarchical and hybrid transformers, MLPs, pool-formers.
# Not here: sequencer2d_s (an LSTM per row and column; agrees, but its unrolled steps take 25-100 s to count).
TIMM = """
resnet50 resnet18d seresnext26d_32x4d efficientnet_b0 efficientnetv2_rw_t tf_efficientnet_lite0 mobilenetv3_small_100
mobilenetv3_large_100 mobilenetv4_conv_small convnext_atto convnext_tiny convnextv2_atto vit_tiny_patch16_224
vit_small_patch16_224 deit_tiny_patch16_224 deit_tiny_distilled_patch16_224 deit3_small_patch16_224
swin_tiny_patch4_window7_224 swinv2_tiny_window8_256 swinv2_cr_tiny_ns_224 regnetx_002 regnety_002 regnetz_b16
levit_128s levit_conv_128s coatnet_0_rw_224 maxvit_tiny_rw_224 maxxvit_rmlp_nano_rw_256 poolformer_s12
poolformerv2_s12 mixer_s16_224 resmlp_12_224 gmlp_ti16_224 beit_base_patch16_224 eva02_tiny_patch14_224
cait_xxs24_224 xcit_nano_12_p16_224 crossvit_tiny_240 coat_lite_tiny pvt_v2_b0 twins_svt_small mobilevit_xxs
mobilevitv2_050 edgenext_xx_small efficientformer_l1 efficientformerv2_s0 fastvit_t8 repvit_m0_9 tiny_vit_5m_224
davit_tiny focalnet_tiny_srf gcvit_xxtiny nest_tiny inception_next_tiny volo_d1_224 nfnet_l0 dm_nfnet_f0
hrnet_w18_small dla34 cspresnet50 rexnet_100 ghostnet_100 ghostnetv2_100 res2net50_14w_8s resnest14d skresnet18
efficientvit_b0 efficientvit_m0 hgnetv2_b0 starnet_s1 pit_ti_224 convit_tiny visformer_tiny hiera_tiny_224
inception_v3 xception41 densenet121 vgg11 mambaout_femto rdnet_tiny nextvit_small fasternet_t0 dpn68
tresnet_m
""".split()


def _build(factory):
    """The model on meta when its constructor allows it, else on the CPU (torchvision's RegNet inits in place)."""
    try:
        with torch.device("meta"):
            return factory().eval()
    except (NotImplementedError, RuntimeError):
        return factory().eval()


def _flop_counter_macs(model, *shapes) -> float:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model = model.to("meta")
    with FlopCounterMode(display=False) as mode, sdpa_kernel(SDPBackend.MATH):
        model(*(torch.empty(shape, device="meta") for shape in shapes))
    return mode.get_total_flops() / 2


def _check(model, *shapes):
    """Every op counted in the all scope; the conv scope is FlopCounterMode's. Returns the all-scope count."""
    fc = cnnprof.count_flops(model, inputs=shapes, scope="all")
    assert fc.uncounted == ()
    assert dataclasses.replace(fc, scope="conv").macs == _flop_counter_macs(model, *shapes)
    return fc


@pytest.mark.parametrize("name, shape, kwargs", TORCHVISION, ids=[case[0] for case in TORCHVISION])
def test_torchvision_model_is_fully_counted_and_agrees_with_flop_counter(name, shape, kwargs):
    _check(_build(lambda: tvm.get_model(name, **kwargs)), SHAPES.get(name, shape))


@pytest.mark.parametrize("name", TIMM)
def test_timm_model_is_fully_counted_and_agrees_with_flop_counter(name):
    timm = pytest.importorskip("timm")
    model = _build(lambda: timm.create_model(name, pretrained=False))
    _check(model, (1, *model.pretrained_cfg["input_size"]))


# Built CPU models counted through the API, then run: counting must leave them exactly as they were (issue 17:
# Faster R-CNN's AnchorGenerator caches its anchors on the input's device, once left on meta by counting).
UNTOUCHED = [("detection", "fasterrcnn_mobilenet_v3_large_320_fpn", (3, 320, 320)),
             ("detection", "retinanet_resnet50_fpn", (3, 256, 256)),
             ("segmentation", "lraspp_mobilenet_v3_large", (1, 3, 224, 224)),
             ("segmentation", "fcn_resnet50", (1, 3, 160, 160))]


@pytest.mark.parametrize("family, name, shape", UNTOUCHED, ids=[case[1] for case in UNTOUCHED])
def test_counting_a_built_model_leaves_it_as_it_was(family, name, shape):
    torch.manual_seed(0)
    model = tvm.get_model(name, weights=None, weights_backbone=None).eval()
    x = [torch.rand(shape)] if family == "detection" else torch.rand(shape)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(x)
    fc = cnnprof.count_flops(model, inputs=(x,))
    assert fc.macs > 0 and fc.uncounted == () and fc.method == ("cpu" if family == "detection" else "meta")
    cnnprof.count_params(model)
    with torch.no_grad():
        after = model(x)
    first = (lambda out: out[0]) if family == "detection" else (lambda out: out)
    assert all(torch.equal(first(before)[k], first(after)[k]) for k in first(before))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", ["raft_small", "raft_large"])
def test_optical_flow_model_with_two_image_inputs_is_fully_counted(name):
    """RAFT takes two images (H and W multiples of 8) and looks up its correlation volume with grid_sample."""
    from torchvision.models import optical_flow

    fc = _check(_build(lambda: getattr(optical_flow, name)(weights=None)), (1, 3, 128, 128), (1, 3, 128, 128))
    assert [s.shape for s in fc.inputs] == [(1, 3, 128, 128)] * 2
    assert "grid_sampler_2d" in {s.name for s in fc.by_op()}


def test_timm_naflexvit_is_fully_counted_and_agrees_with_flop_counter():
    """NaFlexViT resizes its position embedding with an antialiased bicubic filter (_upsample_bicubic2d_aa)."""
    timm = pytest.importorskip("timm")
    names = timm.list_models("naflexvit*")
    if not names:
        pytest.skip(f"timm {timm.__version__} has no NaFlexViT")
    name = "naflexvit_base_patch16_gap" if "naflexvit_base_patch16_gap" in names else names[0]
    model = _build(lambda: timm.create_model(name, pretrained=False))
    fc = _check(model, (1, *model.pretrained_cfg["input_size"]))
    assert "_upsample_bicubic2d_aa" in {s.name for s in fc.by_op()}


# ----------------------------------------------------------------------------- training steps (mode="train")

CLASSIFICATION = tvm.list_models(module=tvm)


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_torchvision_training_step_backward_agrees_with_flop_counter(name):
    model = _build(lambda: tvm.get_model(name))
    shape = (2, *SHAPES.get(name, IMAGE)[1:])  # batch norm in train() mode needs two values per channel
    fc = cnnprof.count_flops(model, inputs=shape, scope="all", mode="train")
    assert fc.uncounted == ()
    conv = dataclasses.replace(fc, scope="conv")
    assert conv.backward.macs == flop_counter_backward_macs(model, shape)
    assert conv.part("grad_weight").macs > 0


# torchvision's quantized models (int8, fbgemm / qnnpack) with random weights, quantized and calibrated by
# torchvision itself (`quantize=True`). Quantized kernels do not run on meta: each is counted by one real CPU pass.
QUANTIZED = tvm.list_models(module=tvm.quantization)


@pytest.mark.parametrize("name", QUANTIZED)
def test_torchvision_quantized_model_counts_what_its_float_model_counts(name):
    """Every op priced in the all scope; conv-scope MACs and acts are the float model's (batch norms are folded
    into the convolutions); the packed int8 weights are the float model's conv and linear weights, element for
    element."""
    import warnings

    base = name.removeprefix("quantized_")
    shape = SHAPES.get(base, IMAGE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation warnings
        quantized = tvm.get_model(name, weights=None, quantize=True)
    fc = cnnprof.count_flops(quantized, shape, scope="all")
    float_model = _build(lambda: tvm.get_model(base))
    float_fc = cnnprof.count_flops(float_model, shape)
    assert (fc.method, fc.uncounted) == ("cpu", ())
    assert (dataclasses.replace(fc, scope="conv").macs, fc.acts) == (float_fc.macs, float_fc.acts)
    weights = sum(m.weight.numel() for m in float_model.modules()
                  if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert dict(cnnprof.count_params(quantized).packed)["qint8"] == weights
