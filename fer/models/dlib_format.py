"""Read dlib's face-recognition network file (dlib_face_recognition_resnet_model_v1.dat) into plain tensors.

A reader of dlib's own serialisation for this one network type (`anet_type` of dlib's
examples/dnn_face_recognition_ex.cpp), written from dlib's serialize/deserialize code:
- dlib/serialize.h: an integer is a control byte (low 4 bits: byte count, bit 7: negative) then that many bytes,
  little endian; a bool is the character '0' or '1'; a string is its length (an integer) then its bytes; a float or
  double is a float_details pair (int64 mantissa, int16 exponent; value = mantissa * 2**exponent).
- dlib/dnn/tensor.h: a tensor is a version (1: every value a float_details; 2: raw float32 little endian), then its
  shape n, k, nr, nc; an alias_tensor is version 1 and the shape.
- dlib/dnn/core.h: add_loss_layer writes (version 1, loss details, subnetwork); add_layer writes (version 1,
  subnetwork, details, 3 bools, x_grad, cached_output; version 2 adds params_grad), or over the input layer
  (version 2, input layer, details, 3 bools, x_grad, cached_output, grad_final; version 3 adds the sample expansion
  factor); add_tag_layer and add_skip_layer write (version 1, subnetwork).
  So a file holds every wrapper's version from the top down, then the input layer, then each layer's details from the
  bottom (the input) up: `read_dlib_network` walks it in exactly that order.
- dlib/dnn/layers.h, input.h, loss.h: the details of con_ ("con_4"), affine_, relu_, max_pool_/avg_pool_
  ("max_pool_2"/"avg_pool_2"), add_prev_, fc_ ("fc_2"), input_rgb_image_sized and loss_metric_.

`read_dlib_network(path)` checks every version string, layer size and hyper-parameter against the architecture of
fer.models.face_resnet and returns the parameters in forward order; `dlib_state_dict(path)` maps them to a
FaceResNet state_dict. Any mismatch or a short file raises ValueError naming the file, the byte offset and what was
expected.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fer.models.face_resnet import STAGES, fold_input_normalisation

INPUT_SIZE = 150  # input_rgb_image_sized<150>


class _Reader:
    """Sequential reader over the file's bytes; every failure names the file and the offset."""

    def __init__(self, path: Path):
        self.path, self.data, self.pos = path, path.read_bytes(), 0

    def fail(self, expected: str, found: str = "") -> ValueError:
        return ValueError(f"{self.path}: not dlib's face-recognition network: at byte {self.pos} expected {expected}"
                          + (f", found {found}" if found else ""))

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"{self.path}: truncated: {len(self.data)} bytes end at byte {self.pos} while reading "
                             f"{what} ({n} bytes needed)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def integer(self, what: str, signed: bool = True) -> int:
        control = self.take(1, what)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70 or (not signed and control & 0x80):
            self.pos -= 1
            raise self.fail(f"an integer ({what})", f"control byte 0x{control:02x}")
        value = int.from_bytes(self.take(size, what), "little")
        return -value if control & 0x80 else value

    def expect_int(self, expected: int, what: str) -> None:
        start = self.pos
        value = self.integer(what)
        if value != expected:
            self.pos = start
            raise self.fail(f"{what} = {expected}", str(value))

    def boolean(self, what: str) -> bool:
        ch = self.take(1, what)
        if ch not in (b"0", b"1"):
            self.pos -= 1
            raise self.fail(f"a bool ({what})", repr(ch))
        return ch == b"1"

    def string(self, what: str) -> str:
        n = self.integer(f"length of {what}", signed=False)
        if n > 64:
            raise self.fail(f"the name {what} (at most 64 characters)", f"a length of {n}")
        return self.take(n, what).decode("latin-1")

    def expect_string(self, expected: tuple[str, ...], what: str) -> str:
        start = self.pos
        value = self.string(what)
        if value not in expected:
            self.pos = start
            raise self.fail(" or ".join(repr(e) for e in expected), repr(value))
        return value

    def real(self, what: str) -> float:
        """A float or double: dlib's float_details (the pre-2013 ASCII form is not accepted)."""
        mantissa, exponent = self.integer(f"mantissa of {what}"), self.integer(f"exponent of {what}")
        special = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
        return special[exponent] if exponent in special else math.ldexp(mantissa, exponent)

    def shape(self, what: str) -> tuple[int, int, int, int]:
        return tuple(self.integer(f"shape of {what}") for _ in range(4))

    def tensor(self, what: str) -> np.ndarray:
        """A resizable_tensor: version 1 (float_details values) or 2 (raw float32), shape (n, k, nr, nc)."""
        start = self.pos
        version = self.integer(f"version of tensor {what}")
        if version not in (1, 2):
            self.pos = start
            raise self.fail(f"tensor version 1 or 2 ({what})", str(version))
        shape = self.shape(what)
        if min(shape) < 0 or math.prod(shape) > len(self.data):
            raise self.fail(f"a tensor shape ({what})", str(shape))
        count = math.prod(shape)
        if version == 2:
            values = np.frombuffer(self.take(4 * count, what), dtype="<f4")
        else:
            values = np.array([self.real(what) for _ in range(count)], dtype=np.float32)
        return values.reshape(shape).astype(np.float32)

    def alias(self, what: str) -> tuple[int, int, int, int]:
        self.expect_int(1, f"version of alias_tensor {what}")
        return self.shape(what)

    def empty_tensor(self, what: str) -> None:
        start = self.pos
        if self.tensor(what).size:
            self.pos = start
            raise self.fail(f"an empty {what} (a network saved after clean())", "a non-empty tensor")


@dataclass
class DlibNetwork:
    """The parameters of dlib's anet_type in forward order: convs (weight (O, I, 7|3, 7|3), bias (O,)),
    affines (scale (C,), shift (C,)), fc weight (128, 256) as torch.nn.Linear stores it, input means (R, G, B)."""

    convs: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    affines: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    fc: np.ndarray | None = None
    input_means: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _layers_top_down() -> list[tuple]:
    """anet_type as dlib nests it, outermost first (below the loss): ("layer", kind, args), ("tag", id), ("skip", id).
    A residual block is relu(add_prev1(affine(con(relu(affine(con(tag1(x)))))))); a downsampling block is
    relu(add_prev2(avg_pool(skip1(tag2(affine(con(relu(affine(con/2(tag1(x))))))))))."""
    top = [("layer", "fc", (128,)), ("layer", "avg_pool", (0, 1))]
    blocks = []  # forward order
    for channels, count, down in STAGES:
        blocks += [(channels, down and i == 0) for i in range(count)]
    for channels, down in reversed(blocks):
        top += [("layer", "relu", ())]
        if down:
            top += [("layer", "add_prev", ()), ("layer", "avg_pool", (2, 2)), ("skip", 1), ("tag", 2)]
        else:
            top += [("layer", "add_prev", ())]
        top += [("layer", "affine", (channels,)), ("layer", "con", (channels, 3, 1)), ("layer", "relu", ()),
                ("layer", "affine", (channels,)), ("layer", "con", (channels, 3, 2 if down else 1)), ("tag", 1)]
    return top + [("layer", "max_pool", (3, 2)), ("layer", "relu", ()), ("layer", "affine", (STAGES[0][0],)),
                  ("layer", "con", (STAGES[0][0], 7, 2))]


def _read_details(r: _Reader, kind: str, args: tuple, net: DlibNetwork, index: int) -> None:
    where = f"layer {index} ({kind})"
    if kind == "con":
        filters, size, stride = args
        r.expect_string(("con_4",), f"the name of {where}")
        params = r.tensor(f"{where} params")
        geometry = [r.integer(f"{where} {name}") for name in ("num_filters", "nr", "nc", "stride_y", "stride_x",
                                                              "padding_y", "padding_x")]
        padding = 0 if stride != 1 else size // 2  # dlib's con_ default: no padding when strided
        if geometry != [filters, size, size, stride, stride, padding, padding]:
            raise r.fail(f"{where} = {filters} filters {size}x{size}/{stride} padding {padding}", str(geometry))
        w_shape, b_shape = r.alias(f"{where} filters"), r.alias(f"{where} biases")
        for name in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
            r.real(f"{where} {name}_multiplier")
        if w_shape[0] != filters or b_shape != (1, filters, 1, 1) or params.size != math.prod(w_shape) + filters:
            raise r.fail(f"{where} filters ({filters}, C, {size}, {size}) and {filters} biases",
                         f"filters {w_shape}, biases {b_shape}, {params.size} values")
        flat = params.ravel()
        n = math.prod(w_shape)
        net.convs.append((flat[:n].reshape(w_shape).copy(), flat[n:].copy()))
    elif kind == "affine":
        (channels,) = args
        r.expect_string(("affine_",), f"the name of {where}")
        params = r.tensor(f"{where} params")
        gamma, beta = r.alias(f"{where} gamma"), r.alias(f"{where} beta")
        r.expect_int(0, f"{where} mode (0: CONV_MODE)")
        if gamma != (1, channels, 1, 1) or beta != gamma or params.size != 2 * channels:
            raise r.fail(f"{where} of {channels} channels", f"gamma {gamma}, beta {beta}, {params.size} values")
        flat = params.ravel()
        net.affines.append((flat[:channels].copy(), flat[channels:].copy()))
    elif kind in ("relu", "add_prev"):
        r.expect_string((f"{kind}_",), f"the name of {where}")
    elif kind in ("max_pool", "avg_pool"):
        size, stride = args
        r.expect_string((f"{kind}_2",), f"the name of {where}")
        geometry = [r.integer(f"{where} {name}") for name in ("nr", "nc", "stride_y", "stride_x", "padding_y",
                                                              "padding_x")]
        padding = 0 if stride != 1 else size // 2  # dlib's pooling default (0x0 window: the whole map, no padding)
        if geometry != [size, size, stride, stride, padding, padding]:
            raise r.fail(f"{where} {size}x{size}/{stride} padding {padding}", str(geometry))
    elif kind == "fc":
        (outputs,) = args
        r.expect_string(("fc_2",), f"the name of {where}")
        num_outputs, num_inputs = r.integer(f"{where} num_outputs", False), r.integer(f"{where} num_inputs", False)
        params = r.tensor(f"{where} params")
        weights, _ = r.alias(f"{where} weights"), r.alias(f"{where} biases")
        r.expect_int(1, f"{where} bias mode (1: FC_NO_BIAS)")
        for name in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
            r.real(f"{where} {name}_multiplier")
        inputs = STAGES[-1][0]
        if (num_outputs, num_inputs) != (outputs, inputs) or weights[:2] != (inputs, outputs) \
                or params.size != inputs * outputs:
            raise r.fail(f"{where} {inputs} -> {outputs} without bias",
                         f"{num_inputs} -> {num_outputs}, weights {weights}, {params.size} values")
        net.fc = params.reshape(inputs, outputs).T.copy()  # dlib computes x @ W with W (inputs, outputs)
    else:  # pragma: no cover - the layer table above names only these
        raise AssertionError(kind)


def read_dlib_network(path: str | Path) -> DlibNetwork:
    """Parse dlib_face_recognition_resnet_model_v1.dat (or any file of the same network type)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dlib network file not found")
    r = _Reader(path)
    net = DlibNetwork()
    r.expect_int(1, "version of add_loss_layer")
    name = r.expect_string(("loss_metric_", "loss_metric_2"), "the loss name")
    if name == "loss_metric_2":
        r.real("loss margin"), r.real("loss distance threshold")
    layers = _layers_top_down()
    versions = []
    for i, (kind, *_) in enumerate(layers):
        # add_layer: 1, or 2 with params_grad; the add_layer right above the input: 2, or 3 with the sample
        # expansion factor; tag and skip layers: 1
        accepted = (2, 3) if i == len(layers) - 1 else (1, 2) if kind == "layer" else (1,)
        start = r.pos
        versions.append(r.integer(f"version of layer {i}"))
        if versions[-1] not in accepted:
            r.pos = start
            raise r.fail(f"version {' or '.join(map(str, accepted))} of the {kind} wrapper of layer {i}",
                         str(versions[-1]))
    r.expect_string(("input_rgb_image_sized",), "the input layer")
    net.input_means = tuple(r.real(f"input mean of {c}") for c in ("red", "green", "blue"))
    size = (r.integer("input rows", False), r.integer("input columns", False))
    if size != (INPUT_SIZE, INPUT_SIZE):
        raise r.fail(f"an input of {INPUT_SIZE}x{INPUT_SIZE}", f"{size[0]}x{size[1]}")
    for i in reversed(range(len(layers))):
        kind, *args = layers[i]
        if kind != "layer":
            continue
        _read_details(r, args[0], args[1], net, i)
        for flag in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
            r.boolean(f"layer {i} {flag}")
        if i < len(layers) - 1:
            for state in ("x_grad", "cached_output") + (("params_grad",) if versions[i] == 2 else ()):
                r.empty_tensor(f"layer {i} {state}")
        else:
            for state in ("x_grad", "cached_output", "grad_final"):
                r.empty_tensor(f"layer {i} {state}")
            if versions[i] == 3:
                r.expect_int(1, f"layer {i} sample expansion factor")
    if r.pos != len(r.data):
        raise r.fail("the end of the file", f"{len(r.data) - r.pos} more bytes")
    for values in [t for pair in net.convs + net.affines for t in pair] + [net.fc]:
        if not np.isfinite(values).all():
            raise ValueError(f"{path}: the network holds non-finite parameters")
    return net


def dlib_state_dict(path: str | Path, in_channels: int = 3) -> dict[str, torch.Tensor]:
    """The FaceResNet state_dict (without head.*) for dlib's network file: each affine becomes a BatchNorm2d in eval
    form (weight = scale, bias = shift, running_mean = 0, running_var = 1 - eps), the input normalisation is folded into
    the first convolution (fer.models.face_resnet.fold_input_normalisation)."""
    from fer.models.face_resnet import FaceResNet

    net = read_dlib_network(path)
    model = FaceResNet(in_channels=in_channels)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == len(net.convs) and len(norms) == len(net.affines), "the layer table matches the model"
    names = {m: name for name, m in model.named_modules()}
    state = {}
    for i, (conv, (weight, bias)) in enumerate(zip(convs, net.convs)):
        weight, bias = torch.from_numpy(weight), torch.from_numpy(bias)
        if i == 0:
            weight, bias = fold_input_normalisation(weight, bias, net.input_means, in_channels)
        assert weight.shape == conv.weight.shape, (names[conv], weight.shape, conv.weight.shape)
        state[f"{names[conv]}.weight"], state[f"{names[conv]}.bias"] = weight, bias
    for norm, (scale, shift) in zip(norms, net.affines):
        prefix = names[norm]
        state[f"{prefix}.weight"], state[f"{prefix}.bias"] = torch.from_numpy(scale), torch.from_numpy(shift)
        state[f"{prefix}.running_mean"] = torch.zeros(norm.num_features)
        state[f"{prefix}.running_var"] = torch.full((norm.num_features,), 1 - norm.eps)
        state[f"{prefix}.num_batches_tracked"] = torch.tensor(0)
    state["fc.weight"] = torch.from_numpy(net.fc)
    return state
