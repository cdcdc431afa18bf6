"""MobileNetV2 (no top, average pooled, 1280-d) written as an ONNX graph
straight from a Keras HDF5 weights file, with the onnx library: no
TensorFlow, no tf2onnx, about a second instead of 15.

The layers and their names follow `keras.applications.MobileNetV2` (alpha
1.0); batch normalization is folded into the convolutions. The input is NHWC
float32 in [-1, 1] (what `fruits.decoding.preprocess` gives), of any batch size
and any height and width that are multiples of 32: every stride-2 layer then
sees an even size, where Keras pads one row and column at the bottom and right.
Keras stays the reference: tests compare these features with Keras' own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fruits.config import FEATURE_DIM, ConfigError

BN_EPSILON = 1e-3  # keras.applications.MobileNetV2's BatchNormalization
# (expansion, stride, output channels) of the 17 inverted-residual blocks.
BLOCKS = (
    (1, 1, 16),
    (6, 2, 24), (6, 1, 24),
    (6, 2, 32), (6, 1, 32), (6, 1, 32),
    (6, 2, 64), (6, 1, 64), (6, 1, 64), (6, 1, 64),
    (6, 1, 96), (6, 1, 96), (6, 1, 96),
    (6, 2, 160), (6, 1, 160), (6, 1, 160),
    (6, 1, 320),
)  # fmt: skip


def read_keras_weights(path: Path) -> dict[str, list[np.ndarray]]:
    """Layer name -> its arrays in Keras' order, from a legacy Keras HDF5 weights
    file (the kind `keras.applications` downloads)."""
    import h5py

    def text(value) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    try:
        with h5py.File(path, "r") as file:
            root = file.get("model_weights", file)
            layers = {}
            for layer in map(text, root.attrs["layer_names"]):
                names = [text(name) for name in root[layer].attrs.get("weight_names", [])]
                if names:
                    layers[layer] = [np.asarray(root[layer][name], np.float32) for name in names]
    except (OSError, KeyError) as exc:
        raise ConfigError(f"{path} is not a Keras HDF5 weights file: {exc}") from None
    return layers


class _Builder:
    """Appends nodes and their initializers; names each output after its Keras layer."""

    def __init__(self, weights: dict[str, list[np.ndarray]], source: Path) -> None:
        self.weights = weights
        self.source = source
        self.nodes: list = []
        self.initializers: list = []

    def arrays(self, layer: str) -> list[np.ndarray]:
        if layer not in self.weights:
            raise ConfigError(f"{self.source} is not MobileNetV2 no-top Keras weights (no layer {layer!r})")
        return self.weights[layer]

    def constant(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def conv_bn(
        self, x: str, conv: str, bn: str, *, stride: int = 1, depthwise: bool = False, relu6: bool = True
    ) -> str:
        (kernel,) = self.arrays(conv)
        gamma, beta, mean, variance = self.arrays(bn)
        factor = gamma / np.sqrt(variance + BN_EPSILON)
        # Keras (kh, kw, in, out) or depthwise (kh, kw, in, 1) -> ONNX (out, in/group, kh, kw)
        weight = kernel.transpose(2, 3, 0, 1) if depthwise else kernel.transpose(3, 2, 0, 1)
        weight = weight * factor[:, None, None, None]
        size = kernel.shape[0]
        pads = [size // 2] * 4 if stride == 1 else [0, 0, 1, 1]  # Keras: the extra row/column at the end
        y = self.node(
            "Conv",
            [x, self.constant(f"{conv}/weight", weight), self.constant(f"{conv}/bias", beta - mean * factor)],
            conv,
            kernel_shape=[size, size],
            strides=[stride, stride],
            pads=pads,
            group=weight.shape[0] if depthwise else 1,
        )
        return self.node("Clip", [y, "relu6/min", "relu6/max"], f"{conv}_relu6") if relu6 else y


def build(weights_path: Path, metadata: dict[str, str] | None = None):
    """The ONNX model: input ``images`` (N, H, W, 3) float32, output ``features`` (N, 1280)."""
    from onnx import TensorProto, helper

    b = _Builder(read_keras_weights(weights_path), weights_path)
    for layer, shape in (("Conv1", (3, 3, 3, 32)), ("Conv_1", (1, 1, 320, FEATURE_DIM))):  # alpha 1.0
        if b.arrays(layer)[0].shape != shape:
            raise ConfigError(f"{weights_path} is not MobileNetV2 no-top Keras weights of alpha 1.0 ({layer})")
    b.constant("relu6/min", np.array(0.0))
    b.constant("relu6/max", np.array(6.0))
    x = b.node("Transpose", ["images"], "nchw", perm=[0, 3, 1, 2])
    x = b.conv_bn(x, "Conv1", "bn_Conv1", stride=2)
    channels = 32
    for index, (expansion, stride, filters) in enumerate(BLOCKS):
        prefix = f"block_{index}_" if index else "expanded_conv_"
        y = x
        if expansion != 1:
            y = b.conv_bn(y, f"{prefix}expand", f"{prefix}expand_BN")
        y = b.conv_bn(y, f"{prefix}depthwise", f"{prefix}depthwise_BN", stride=stride, depthwise=True)
        y = b.conv_bn(y, f"{prefix}project", f"{prefix}project_BN", relu6=False)
        x = b.node("Add", [x, y], f"{prefix}add") if stride == 1 and channels == filters else y
        channels = filters
    x = b.conv_bn(x, "Conv_1", "Conv_1_bn")
    x = b.node("GlobalAveragePool", [x], "pooled")
    b.node("Flatten", [x], "features")
    graph = helper.make_graph(
        b.nodes,
        "mobilenet_v2_no_top_avg",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", "height", "width", 3])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", FEATURE_DIM])],
        b.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="fruits")
    model.ir_version = 8  # ONNX Runtime 1.23 reads up to 10; 8 keeps older runtimes (apps) able to load it
    if metadata:
        helper.set_model_props(model, metadata)
    return model
