import numpy as np
import pytest
import torch

from fer.models import MIN_INPUT_SIZE, MODELS, create_model

TRAINABLE = lambda model: sum(p.numel() for p in model.parameters() if p.requires_grad)  # noqa: E731


def test_mini_xception_is_faithful():
    model = create_model("mini_xception", 7, head="keras")
    assert TRAINABLE(model) == 56951, "Arriaga et al.'s Keras model has 56,951 trainable parameters"
    buffers = sum(b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked"))
    assert buffers == 1472, "BatchNorm running statistics of the Keras model"
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert (bn.momentum, bn.eps) == (0.01, 1e-3), "Keras BatchNormalization defaults"


@pytest.mark.parametrize("size, expected", [(64, [62, 60, 30, 15, 8, 4]), (48, [46, 44, 22, 11, 6, 3])])
def test_mini_xception_intermediate_sizes(size, expected):
    model = create_model("mini_xception", 7, head="keras").eval()
    sizes = []
    x = torch.zeros(1, 1, size, size)
    for layer in model.base:
        x = layer(x)
        if isinstance(layer, torch.nn.Conv2d):
            sizes.append(x.shape[-1])
    for module in model.modules_:
        x = module(x)
        sizes.append(x.shape[-1])
    assert sizes == expected


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("head", ["linear", "cosine"])
def test_shapes_finite_and_every_parameter_gets_a_gradient(name, head):
    torch.manual_seed(0)
    model = create_model(name, 7, head=head).to(memory_format=torch.channels_last)
    size = max(48, MIN_INPUT_SIZE.get(name, 0))
    x = torch.randn(4, 1, size, size).contiguous(memory_format=torch.channels_last)
    embeddings, outputs = model.forward_both(x)
    assert embeddings.shape == (4, model.embedding_dim) and outputs.shape == (4, 7)
    assert torch.isfinite(outputs).all()
    if head == "cosine":
        assert outputs.abs().max() <= 1 + 1e-5, "the cosine head returns cosines"
    (outputs.sum() + embeddings.sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing}"


def test_keras_head_and_eval_determinism():
    model = create_model("mini_xception", 7, head="keras").eval()
    x = torch.randn(3, 1, 64, 64)
    assert model(x).shape == (3, 7)
    assert torch.equal(model(x), model(x))
    assert torch.allclose(model.forward_features(x), model.forward_both(x)[0])


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError, match="known models: mini_xception, resnet_small"):
        create_model("resnet50")
    with pytest.raises(ValueError, match="unknown head"):
        create_model("mini_xception", head="arc")


def test_stem_takes_three_channels_and_only_the_first_convolution_grows():
    gray = create_model("mini_xception", 7, head="keras", in_channels=1)
    colour = create_model("mini_xception", 7, head="keras", in_channels=3)
    assert TRAINABLE(gray) == 56951, "gray input keeps the Keras model's parameter count"
    assert TRAINABLE(colour) - TRAINABLE(gray) == 2 * 8 * 3 * 3, "two more input channels of the first 3x3 conv (8 filters)"
    for name in ("resnet_small", "resnet_medium"):
        diff = TRAINABLE(create_model(name, in_channels=3)) - TRAINABLE(create_model(name, in_channels=1))
        assert diff == 2 * 16 * 3 * 3, f"{name}: only the 16-filter stem conv sees the input channels"
    with pytest.raises(ValueError, match="in_channels must be 1 .* or 3"):
        create_model("mini_xception", in_channels=2)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [40, 48, 64, 100, 112, 150])
def test_every_model_takes_every_input_size_and_channel_count(name, channels, size):
    torch.manual_seed(0)
    model = create_model(name, 7, head="cosine", in_channels=channels).eval().to(memory_format=torch.channels_last)
    x = torch.randn(2, channels, size, size).contiguous(memory_format=torch.channels_last)
    if size < MIN_INPUT_SIZE.get(name, 0):
        with pytest.raises(ValueError, match=f"at least {MIN_INPUT_SIZE[name]} px"):
            model(x)
        return
    embeddings, outputs = model.forward_both(x)
    assert embeddings.shape == (2, model.embedding_dim) and outputs.shape == (2, 7), (size, channels)
    assert torch.isfinite(embeddings).all() and torch.isfinite(outputs).all()
    with pytest.raises(RuntimeError):  # a gray batch into a colour stem (and back) is refused by the convolution
        model(torch.randn(2, 4 - channels, size, size))


@pytest.mark.parametrize("name, size", [(name, size) for name in MODELS for size in (40, 64, 112, 150)
                                        if MIN_INPUT_SIZE.get(name, 0) <= size and (size < 150 or name in MIN_INPUT_SIZE)])
def test_channels_last_backward_at_every_size(name, size):
    """Training runs channels-last; at 60 px and up a oneDNN crash in mini-Xception's strided shortcut is avoided."""
    torch.manual_seed(0)
    model = create_model(name, 7, head="cosine", in_channels=3).to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, size, size).contiguous(memory_format=torch.channels_last)
    embeddings, outputs = model.forward_both(x)
    (outputs.sum() + embeddings.sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_mini_xception_subsampled_shortcut_equals_the_strided_convolution():
    from fer.models.mini_xception import STRIDED_SHORTCUT_MAX_SIDE, XceptionModule

    torch.manual_seed(0)
    module = XceptionModule(8, 16).eval()
    for side in (STRIDED_SHORTCUT_MAX_SIDE + 1, 61, 108):
        x = torch.randn(2, 8, side, side)
        assert torch.allclose(module.shortcut(x), module.residual(x), atol=1e-6), side


def resized(faces, size: int, channels: int) -> torch.Tensor:
    """uint8 gray faces (N, 48, 48) resized to size (gray, or the gray face as BGR), scaled as to_tensor does: (N, C, S, S)."""
    import cv2

    from fer.data.transforms import to_tensor

    faces = [cv2.resize(face, (size, size)) for face in faces]
    if channels == 3:
        faces = [cv2.cvtColor(face, cv2.COLOR_GRAY2BGR) for face in faces]
    return to_tensor(np.stack(faces))


@pytest.mark.parametrize("name, size, channels", [("mini_xception", 48, 1), ("mini_xception", 100, 3),
                                                  ("resnet_small", 64, 1), ("resnet_medium", 48, 3),
                                                  ("face_resnet", 112, 3), ("face_resnet", 150, 1)])
def test_folding_batch_norm_keeps_the_outputs_and_removes_every_batch_norm(real_faces, name, size, channels):
    from fer.models.fold import fold_batchnorm

    torch.manual_seed(0)
    model = create_model(name, 7, head="cosine", in_channels=channels)
    x = resized(real_faces, size, channels)
    with torch.no_grad():
        model.train()
        for _ in range(3):  # forward passes in train mode give the BN layers non-trivial running statistics
            model.forward_both(x)
        model.eval()
        expected = model.forward_both(x)
        folded = fold_batchnorm(model)
        got = folded.forward_both(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()), "the original must stay untouched"
    for e, g in zip(expected, got):
        assert torch.allclose(e, g, atol=1e-4, rtol=1e-4), (e - g).abs().max()


@pytest.mark.parametrize("name, size, channels", [("mini_xception", 48, 1), ("resnet_small", 48, 1),
                                                  ("resnet_medium", 64, 3), ("face_resnet", 112, 3)])
def test_the_frozen_cpu_graph_gives_eager_outputs_at_every_batch_size(real_faces, name, size, channels):
    from fer.models.fold import fold_batchnorm
    from fer.models.freeze import freeze_for_cpu

    torch.manual_seed(0)
    model = create_model(name, 7, head="cosine", in_channels=channels)
    with torch.no_grad():
        model.train()
        for _ in range(3):  # non-trivial BN statistics, as in a trained model
            model.forward_both(resized(real_faces[:16], size, channels))
    folded = fold_batchnorm(model)
    frozen = freeze_for_cpu(folded, size, channels)  # traced at batch 1
    assert isinstance(frozen, torch.jit.ScriptModule)
    x = resized(real_faces, size, channels).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for batch in (1, 3, 56):
            expected, got = folded.forward_both(x[:batch]), frozen(x[:batch])
            for e, g in zip(expected, got):
                assert e.shape == g.shape
                assert torch.allclose(e, g, atol=1e-4, rtol=1e-4), (name, batch, (e - g).abs().max())


def test_the_torch_classifier_gives_the_unfolded_probabilities_of_the_shipped_default(real_faces):
    from fer.calibration import temperature_of
    from fer.checkpoint import load_model
    from fer.inference import Classifier

    classifier = Classifier.load()
    model, checkpoint = load_model(None)
    x = resized(real_faces, classifier.input_size, classifier.channels)
    with torch.no_grad():
        logits = model.forward_both(x)[1] * checkpoint["model_spec"]["prob_scale"]
        expected = torch.softmax(logits / temperature_of(checkpoint), dim=1)  # its calibration (fer.calibration)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in classifier.model.modules())
    assert torch.allclose(classifier.outputs(x)[1], expected, atol=1e-5)
