"""ONNX export: parity with torch on real FER2013 test faces in onnxruntime and cv2.dnn, metadata, bad input."""

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from fer.backends import OnnxRuntimeClassifier, OpenCVClassifier, load_classifier
from fer.checkpoint import load_checkpoint, model_spec, shipped_models
from fer.data.transforms import to_tensor
from fer.export import export_onnx, export_triton, onnx_bytes, read_onnx
from fer.inference import Classifier
from fer.labels import FER2013_CLASSES
from fer.models import create_model

from conftest import model_faces

PARITY = 1e-4  # the bound on max |p_onnx - p_torch|


@pytest.mark.parametrize("name", shipped_models())
def test_parity_on_real_faces_in_onnxruntime_and_opencv(name, real_faces, tmp_path):
    torch_classifier = Classifier.load(name)
    real_faces = model_faces(real_faces, torch_classifier)
    path = export_onnx(name, tmp_path / f"{name}.onnx")
    info = read_onnx(path.read_bytes(), str(path))
    embeddings_torch, probs_torch = (t.numpy() for t in torch_classifier.outputs(to_tensor(real_faces)))
    for backend in (OnnxRuntimeClassifier(path.read_bytes(), info), OpenCVClassifier(path.read_bytes(), info)):
        embeddings, probs = (t.numpy() for t in backend.outputs(to_tensor(real_faces)))
        gap = np.abs(probs - probs_torch).max()
        assert gap <= PARITY, f"{name} in {type(backend).__name__}: max |p_onnx - p_torch| = {gap:.2e}"
        assert np.abs(embeddings - embeddings_torch).max() <= 1e-3 * np.abs(embeddings_torch).max()
        one = backend.predict(real_faces[:1])  # the dynamic batch axis: 1 and 56 faces from one graph
        assert one.shape == (1, len(torch_classifier.class_names)) and np.abs(one - probs_torch[:1]).max() <= PARITY


def test_graph_names_shapes_and_metadata(tmp_path):
    path = export_onnx("fer2013", tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    (faces,) = proto.graph.input
    dims = [d.dim_param or d.dim_value for d in faces.type.tensor_type.shape.dim]
    assert faces.name == "faces" and faces.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and dims == ["batch", 1, 48, 48]
    assert [o.name for o in proto.graph.output] == ["probabilities", "embeddings"]
    metadata = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert metadata["fer.class_names"] == list(FER2013_CLASSES)
    assert metadata["fer.input"] == {"size": 48, "channels": 1, "colour_order": "gray", "layout": "NCHW",
                                     "dtype": "float32", "normalisation": "x / 255 * 2 - 1"}
    assert metadata["fer.model_spec"] == load_checkpoint("fer2013")["model_spec"]


@pytest.mark.parametrize("head", ["keras", "linear", "cosine"])
def test_mini_xception_heads_export_with_parity(head, real_faces):
    """Not shipped today, but trainable: every head of the small model exports and matches torch."""
    torch.manual_seed(0)
    model = create_model("mini_xception", 7, head=head).eval()
    spec = model_spec("mini_xception", 7, head, 1, 48, 10.0 if head == "cosine" else 1.0)
    data = onnx_bytes(model, spec, FER2013_CLASSES)
    reference = Classifier(model, FER2013_CLASSES, 48, spec["prob_scale"]).predict(real_faces)
    for backend in (OnnxRuntimeClassifier(data, read_onnx(data, head)), OpenCVClassifier(data, read_onnx(data, head))):
        assert np.abs(backend.predict(real_faces) - reference).max() <= PARITY


def test_onnx_with_mismatched_inputs_is_refused(tmp_path):
    data = onnx_bytes(create_model("mini_xception", 7, head="linear").eval(),
                      model_spec("mini_xception", 7, "linear", 1, 48, 1.0), FER2013_CLASSES)
    proto = onnx.load_from_string(data)
    proto.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 64  # metadata still says 48
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(proto.SerializeToString())
    with pytest.raises(ValueError, match="bad.onnx: inputs do not match"):
        load_classifier(bad, "onnxruntime")
    foreign = tmp_path / "foreign.onnx"
    del proto.metadata_props[:]
    foreign.write_bytes(proto.SerializeToString())
    with pytest.raises(ValueError, match="foreign.onnx: not a fer ONNX export"):
        load_classifier(foreign, "opencv")


def test_triton_repository_layout(tmp_path):
    folder = export_triton("default", tmp_path / "models")
    config = (folder / "config.pbtxt").read_text()
    assert (folder / "1" / "model.onnx").is_file()
    # the shipped default: face_resnet, 112 px BGR colour in, 128-D embeddings out
    assert 'name: "faces"' in config and "dims: [ 3, 112, 112 ]" in config and "dims: [ 128 ]" in config
    assert read_onnx((folder / "1" / "model.onnx").read_bytes(), "m")["class_names"] == FER2013_CLASSES


def test_onnx_path_as_checkpoint_gives_the_same_probabilities(tmp_path, real_faces):
    path = export_onnx("default", tmp_path / "default.onnx")
    from_file = load_classifier(path, "opencv")
    in_memory = load_classifier("default", "opencv")
    assert from_file.class_names == in_memory.class_names and (from_file.input_size, from_file.channels) == (112, 3)
    faces = model_faces(real_faces, in_memory)
    assert np.array_equal(from_file.predict(faces), in_memory.predict(faces))
    assert Path(from_file.checkpoint["path"]) == path and from_file.checkpoint["config"]["data"]["dataset"] == "mixed"


def test_docs_serving_snippet_runs(tmp_path, real_faces, monkeypatch, capsys):
    """docs/export.md's onnxruntime serving snippet, run as written on an exported model and a real aligned face."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "export.md").read_text()
    start, end = text.index("<!-- serving:start -->"), text.index("<!-- serving:end -->")
    snippet = text[start:end].split("```python\n", 1)[1].rsplit("```", 1)[0]
    export_onnx("fer2013", tmp_path / "fer2013.onnx")
    face = real_faces[24]  # a FER2013 test face: already aligned the FER2013 way
    cv2.imwrite(str(tmp_path / "face.png"), face)
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "docs/export.md serving snippet", "exec"), {"__name__": "serving_snippet"})
    printed = capsys.readouterr().out.split()
    expected = Classifier.load("fer2013").predict(face[None])[0]
    assert printed[0] == FER2013_CLASSES[int(expected.argmax())], (printed, expected)
