import pytest
import torch

from fer.models import MODELS, create_model

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
    x = torch.randn(4, 1, 48, 48).contiguous(memory_format=torch.channels_last)
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
