import pytest
import torch

from sepal_tl.tl._encoder import LocalEncoder, create_backbone
from sepal_tl.tl._training import resolve_device


def test_local_checkpoint_is_loaded_offline(tmp_path):
    from safetensors.torch import save_file

    reference = create_backbone("resnet18", pretrained=False, image_size=32)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, tmp_path / "weights.safetensors")
    loaded = create_backbone("resnet18", pretrained=tmp_path / "weights.safetensors", image_size=32)
    for (name, a), (_, b) in zip(reference.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    fresh = create_backbone("resnet18", pretrained=False, image_size=32)
    assert not torch.equal(fresh.conv1.weight, reference.conv1.weight)


def test_encoder_shapes_for_vit_and_cnn():
    for backbone, width in [("vit_tiny_patch16_224", 192), ("resnet18", 512)]:
        encoder = LocalEncoder(backbone, 7, pretrained=False, image_size=32)
        pred, emb = encoder(torch.zeros(2, 3, 32, 32))
        assert pred.shape == (2, 7) and emb.shape == (2, width) and encoder.embedding_dim == width


def test_bad_backbone_and_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="not a timm model"):
        create_backbone("resnet_does_not_exist", pretrained=False, image_size=32)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        create_backbone("resnet18", pretrained=tmp_path / "missing.pth", image_size=32)


def test_devices():
    assert resolve_device("cpu") == ("cpu", 1)
    if not torch.cuda.is_available():
        assert resolve_device("auto") == ("cpu", 1)
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")
    with pytest.raises(ValueError, match="not supported"):
        resolve_device("tpu")
