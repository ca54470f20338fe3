"""The CNN pairs of the hubs profile: timm models and their PaddleClas twins.

One :class:`HubPair` per pair, everything about the pair in its entry:
builders, target layers (upstream's rule, "the last convolutional block
before the pooling", on each side), the sizes it runs at, and the switches
that make PaddleClas's model compute what timm's does.
"""
from __future__ import annotations

from parity.arch_spec import Switch
from parity.hubs.pair_spec import HubPair
from parity.hubs.switches import add_conv_bias, dropout_scale_in_train, torch_hard_sigmoid

__all__ = ["ENTRIES"]

_FULL = (224, 224)
# ScoreCAM / AblationCAM rerun the network once per channel of the target layer (960..2048 here):
# 128x128 keeps a 4x4 map with structure and the run in minutes.
_HEAVY = (128, 128)

# Measured on the seeded pair, both.png at 128x128, argmax target: at stages[-1] and at stages[-2] both sides
# give the same flat CAM (max|Δ| 0), so the comparison would show nothing.
_ABLATION_THROUGH_HEAD_CONV = (
    "upstream's AblationCAM sets an ablated channel to min - 1e7; PP-HGNetV2 pools the last stage into a 1x1 conv "
    "and a ReLU before the classifier, so every ablation moves the score by ~1e6 and the weights (y - y_k) / y "
    "reach -2e7; the weighted sum is negative at every position and the CAM is flat (all zeros) on both sides"
)

_DROPOUT = Switch(
    "dropout upscale_in_train",
    "PaddleClas's head Dropout uses mode='downscale_in_infer', which scales by 1 - p at inference where timm's "
    "is the identity; mode='upscale_in_train' is the same network without that factor",
    dropout_scale_in_train,
)


# Measured on the seeded pair at 224x224 in float64 before this switch: logits max|Δ| above the 1e-9 bound, first
# divergent layer blocks.5.0.se.gate / blocks6.0.se.hardsigmoid (reports/hubs/f64 at 203f3e0).
_TORCH_HARD_SIGMOID = Switch(
    "hard-sigmoid relu6(x + 3) / 6",
    "PaddleClas's squeeze-excite gates are paddle.nn.Hardsigmoid, whose slope is the literal 0.1666667 (1/6 + 3.3e-8) "
    "where timm's gate is relu6(x + 3) / 6; the two agree to float32's last bit and part in float64, so the switch "
    "is shown needed in float64",
    torch_hard_sigmoid,
    measured_in="float64",
)

_SYMMETRIC_PADDING = Switch(
    "padding_type DYNAMIC",
    "PaddleClas's EfficientNetB0 pads its convolutions TensorFlow's way by default (padding_type='SAME': "
    "asymmetric for stride 2, computed for a 224x224 input), timm's efficientnet_b0 pads k // 2 on every side; "
    "padding_type='DYNAMIC' is PaddleClas's option for exactly that padding",
    paddle_kwargs=(("padding_type", "DYNAMIC"),),
)
_TORCH_BATCH_NORM_EPS = Switch(
    "batch_norm_epsilon 1e-5",
    "PaddleClas's EfficientNet normalises with TensorFlow's epsilon 1e-3, timm's efficientnet_b0 with PyTorch's 1e-5; "
    "override_params={'batch_norm_epsilon': 1e-5} is PaddleClas's option for it",
    paddle_kwargs=(("override_params", {"batch_norm_epsilon": 1e-5}),),
)


def _head_bias(path: str) -> Switch:
    return Switch(
        f"bias on {path}",
        f"PaddleClas builds {path} (the 1x1 conv after the global pooling) with bias_attr=False where timm's has a bias; "
        "a zero bias leaves the Paddle layer as it was and receives timm's",
        add_conv_bias(path),
    )


def _cnn(name, family, timm_name, paddleclas_name, torch_layer, paddle_layer, heavy=True, **extra) -> HubPair:
    return HubPair(
        name=name, family=family, torch_builder=f"timm:{timm_name}", paddle_builder=f"paddleclas:{paddleclas_name}",
        transfer="generic", torch_target_layer=torch_layer, paddle_target_layer=paddle_layer,
        input_size=_FULL, heavy_methods=heavy, heavy_size=_HEAVY if heavy else None, **extra,
    )


ENTRIES = (
    _cnn("resnet50d", "resnet", "resnet50d", "ResNet50_vd", "layer4[-1]", "blocks[-1]", heavy=False,
         note="ResNet-D (deep stem, average-pool shortcut): timm's resnet50d and PaddleClas's ResNet50_vd"),
    _cnn("lcnet_100", "lcnet", "lcnet_100", "PPLCNet_x1_0", "blocks[-1]", "blocks6[-1]",
         switches=(_head_bias("last_conv"), _DROPOUT, _TORCH_HARD_SIGMOID), note="PP-LCNet x1.0: timm's lcnet_100 and PaddleClas's PPLCNet_x1_0"),
    _cnn("mobilenetv3_large_100", "mobilenet", "mobilenetv3_large_100", "MobileNetV3_large_x1_0", "blocks[-1]",
         "last_second_conv", note="MobileNetV3-Large x1.0: timm's mobilenetv3_large_100 and PaddleClas's MobileNetV3_large_x1_0",
         known_difference=(
             "the first inverted-residual block (expansion ratio 1) differs: timm's is a depthwise-separable block "
             "(3x3 depthwise conv, then the 1x1 projection), PaddleClas's ResidualUnit always starts with a 1x1 "
             "expansion conv + BatchNorm + ReLU (16 -> 16 channels) before its depthwise conv; the ReLU on the "
             "block's input (hardswish outputs are negative down to -0.375) makes it another function, which no "
             "weight transfer or setting can undo"),
         differs_at=("blocks.0.0.conv_dw", "blocks.0.expand_conv.conv")),
    _cnn("tf_efficientnet_b0", "efficientnet", "tf_efficientnet_b0", "EfficientNetB0", "bn2", "_conv",
         note="EfficientNet-B0 with TensorFlow's SAME padding: timm's tf_efficientnet_b0 and PaddleClas's EfficientNetB0"),
    _cnn("efficientnet_b0", "efficientnet", "efficientnet_b0", "EfficientNetB0", "bn2", "_conv",
         switches=(_SYMMETRIC_PADDING, _TORCH_BATCH_NORM_EPS),
         note="EfficientNet-B0 with PyTorch's symmetric padding: timm's efficientnet_b0 and PaddleClas's EfficientNetB0"),
    _cnn("hgnetv2_b0", "hgnet", "hgnetv2_b0", "PPHGNetV2_B0", "stages[-1]", "stages[-1]",
         note="PP-HGNetV2-B0: timm's hgnetv2_b0 and PaddleClas's PPHGNetV2_B0",
         skip_methods=(("ablationcam", _ABLATION_THROUGH_HEAD_CONV),)),
)
