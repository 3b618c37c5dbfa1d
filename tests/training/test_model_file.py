"""``model.pt`` as ``save_model`` writes it: the same weights, the same bytes."""

import hashlib

import torch

from bincounter.model import WEIGHTS_FILE, build_model, load_model, save_model


def test_the_same_weights_give_the_same_file_and_checksum(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", False, "softmax")
    cards = []
    for name in ("a", "b"):
        cards.append(
            save_model(
                model,
                tmp_path / name,
                arch="resnet18",
                image_size=32,
                head="softmax",
                decision="argmax",
                extra={},
            )
        )
    files = [(tmp_path / name / WEIGHTS_FILE).read_bytes() for name in ("a", "b")]
    assert files[0] == files[1]
    assert cards[0]["weights_sha256"] == hashlib.sha256(files[0]).hexdigest()
    loaded, _ = load_model(tmp_path / "a")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
