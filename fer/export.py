"""Export a checkpoint to ONNX: faces in, probabilities and embeddings out, class names and input spec inside.

The graph (legacy TorchScript exporter, opset 17):
    input  faces          float32 (B, C, S, S), x = pixel / 255 * 2 - 1 (fer.data.transforms.to_tensor), C = 1 gray
                          or 3 BGR, B dynamic
    output probabilities  float32 (B, K) = softmax(prob_scale * outputs / T), as fer.inference.Classifier; T is the
                          checkpoint's calibration temperature (fer.calibration), divided inside the graph so every
                          runtime gives the calibrated probabilities; no division for an uncalibrated checkpoint (T = 1)
    output embeddings     float32 (B, D)
metadata_props: fer.class_names (JSON list), fer.input (JSON: size, channels, colour_order, layout, dtype,
normalisation), fer.model_spec, fer.config and fer.calibration (JSON, from the checkpoint; calibration {} when none).

Why the legacy exporter and this head: in torch 2.13 the dynamo exporter's graph is read by onnxruntime but not by
OpenCV 4.14's cv2.dnn (its Conv bias initialisers fail cv2's shape check), and F.normalize exports as Clip with
no max, which cv2.dnn cannot parse. So the cosine head is rewritten as e / max(|e|, eps) @ W_normalised (the same
function, NORM_EPS as fer.losses), and the legacy exporter writes a graph both runtimes read
(tests/test_export.py checks parity in both).
"""

import copy
import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from fer.losses import NORM_EPS, CosineClassifier

OPSET = 17
INPUT_NAME = "faces"
OUTPUT_NAMES = ("probabilities", "embeddings")
NORMALISATION = "x / 255 * 2 - 1"  # fer.data.transforms.to_tensor


class ExportCosineHead(nn.Module):
    """CosineClassifier at inference, in ops cv2.dnn reads: the normalised weight is a constant, the norm clamp a Max."""

    def __init__(self, head: CosineClassifier):
        super().__init__()
        self.register_buffer("weight_t", F.normalize(head.weight.detach().float(), dim=1, eps=NORM_EPS).T.contiguous())
        self.register_buffer("eps", torch.tensor(NORM_EPS))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        norms = embeddings.pow(2).sum(1, keepdim=True).sqrt()  # (B, 1)
        return (embeddings / torch.maximum(norms, self.eps)) @ self.weight_t  # (B, K)


class ExportModel(nn.Module):
    """faces (B, C, S, S) -> probabilities (B, K), embeddings (B, D)."""

    def __init__(self, model: nn.Module, prob_scale: float, temperature: float = 1.0):
        super().__init__()
        self.model = copy.deepcopy(model).float().eval()
        if isinstance(self.model.head, CosineClassifier):
            self.model.head = ExportCosineHead(self.model.head)
        self.prob_scale = float(prob_scale)
        self.temperature = float(temperature)

    def forward(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings, outputs = self.model.forward_both(faces)
        logits = outputs * self.prob_scale
        if self.temperature != 1.0:  # as fer.inference.Classifier.outputs: the same two operations
            logits = logits / self.temperature
        return torch.softmax(logits, dim=1), embeddings


def input_spec(model_spec: dict) -> dict:
    channels = int(model_spec.get("channels", 1))  # checkpoints from before colour models have no channels key
    return {"size": int(model_spec["image_size"]), "channels": channels,
            "colour_order": "gray" if channels == 1 else "BGR", "layout": "NCHW", "dtype": "float32",
            "normalisation": NORMALISATION}


def onnx_bytes(model: nn.Module, model_spec: dict, class_names, config: dict | None = None,
               calibration: dict | None = None) -> bytes:
    """The serialised ONNX model of a loaded fer model (see the module docstring); calibration: the checkpoint's
    `calibration` value (None: uncalibrated, T = 1)."""
    import onnx

    from fer.calibration import temperature_of

    spec = input_spec(model_spec)
    example = torch.zeros(2, spec["channels"], spec["size"], spec["size"])
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the legacy exporter announces its deprecation; it is chosen on purpose, above
        warnings.simplefilter("ignore")
        temperature = temperature_of({"calibration": calibration, "path": "calibration"})
        torch.onnx.export(ExportModel(model, model_spec["prob_scale"], temperature), (example,), buffer, dynamo=False,
                          opset_version=OPSET, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)})
    proto = onnx.load_from_string(buffer.getvalue())
    metadata = {"fer.class_names": list(class_names), "fer.input": spec, "fer.model_spec": model_spec,
                "fer.config": config or {}, "fer.calibration": calibration or {}}
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    proto.producer_name = "fer-toolkit"
    return proto.SerializeToString()


def read_onnx(model_bytes: bytes, name: str) -> dict:
    """Check that an ONNX model is a fer export whose input matches its spec; returns class_names, input (the spec),
    embedding_dim, model_spec, config, calibration ({} when none). ValueError naming the file and what is wrong
    otherwise."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load_from_string(model_bytes)
    except (DecodeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{name}: not a readable ONNX model ({error})") from None
    metadata = {p.key: p.value for p in proto.metadata_props}
    if "fer.class_names" not in metadata or "fer.input" not in metadata:
        raise ValueError(f"{name}: not a fer ONNX export (no fer.class_names / fer.input metadata); write one with "
                         "`run.py export CHECKPOINT --onnx OUT.onnx`")
    class_names, spec = json.loads(metadata["fer.class_names"]), json.loads(metadata["fer.input"])
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    expected = f"one input '{INPUT_NAME}' float32 (B, {spec['channels']}, {spec['size']}, {spec['size']})"
    found = ", ".join(f"'{i.name}' {onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type).lower()} "
                      f"{tuple(_dims(i))}" for i in inputs)
    if (len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT
            or _dims(inputs[0])[1:] != [spec["channels"], spec["size"], spec["size"]]):
        raise ValueError(f"{name}: inputs do not match: expected {expected} (from its metadata), found {found or 'none'}")
    outputs = {o.name: _dims(o) for o in proto.graph.output}
    if set(OUTPUT_NAMES) - set(outputs) or outputs["probabilities"][1:] != [len(class_names)]:
        raise ValueError(f"{name}: outputs do not match: expected probabilities (B, {len(class_names)}) and "
                         f"embeddings (B, D), found {outputs}")
    return {"class_names": tuple(class_names), "input": spec, "embedding_dim": outputs["embeddings"][1],
            "model_spec": json.loads(metadata.get("fer.model_spec", "{}")), "config": json.loads(metadata.get("fer.config", "{}")),
            "calibration": json.loads(metadata.get("fer.calibration", "{}"))}


def _dims(value_info) -> list:
    """Shape of an ONNX value: ints for fixed sizes, the symbol (e.g. 'batch') for dynamic ones."""
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim]


def export_onnx(checkpoint, out_path: str | Path) -> Path:
    """Write the ONNX model of a checkpoint (a shipped name or a path) to out_path."""
    from fer.checkpoint import load_model

    model, ckpt = load_model(checkpoint)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(onnx_bytes(model, ckpt["model_spec"], ckpt["class_names"], ckpt.get("config"),
                                    ckpt.get("calibration")))
    return out_path


TRITON_CONFIG = """name: "{name}"
backend: "onnxruntime"
max_batch_size: {max_batch}
input [ {{ name: "faces", data_type: TYPE_FP32, dims: [ {channels}, {size}, {size} ] }} ]
output [
  {{ name: "probabilities", data_type: TYPE_FP32, dims: [ {num_classes} ] }},
  {{ name: "embeddings", data_type: TYPE_FP32, dims: [ {embedding_dim} ] }}
]
dynamic_batching {{ }}
parameters {{ key: "class_names" value: {{ string_value: "{classes}" }} }}
"""


def export_triton(checkpoint, repository: str | Path, name: str = "fer", max_batch: int = 64) -> Path:
    """A Triton Inference Server model repository: REPOSITORY/NAME/config.pbtxt and REPOSITORY/NAME/1/model.onnx."""
    folder = Path(repository) / name
    model_path = export_onnx(checkpoint, folder / "1" / "model.onnx")
    info = read_onnx(model_path.read_bytes(), str(model_path))
    config = TRITON_CONFIG.format(name=name, max_batch=max_batch, channels=info["input"]["channels"],
                                  size=info["input"]["size"], num_classes=len(info["class_names"]),
                                  embedding_dim=info["embedding_dim"], classes=",".join(info["class_names"]))
    (folder / "config.pbtxt").write_text(config)
    return folder
