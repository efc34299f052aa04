"""Every registered pretext (built-in, installed plugin, and a third-party one defined here) honours
the contract: declared target shapes and ranges, same seed -> same target, finite loss, gradients in
the encoder, picklable for loader workers, config typos refused."""

from __future__ import annotations

import pickle
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import Field

from cardiossl.registry import describe
from cardiossl.pretexts import PRETEXTS, Pretext, PretextConfig, PretextConfigError, TargetSpec
from cardiossl.pretexts.base import sample_meta
from cardiossl.pretexts.testing import check_contract, example_subject


class HFlipConfig(PretextConfig):
    p: float = Field(0.5, ge=0, le=1)


class HFlipPretext(Pretext):
    """Third-party style pretext: was the image mirrored left-right? (registered by the test only)."""

    name: ClassVar[str] = "test_hflip"
    Config = HFlipConfig

    @property
    def uses_decoder(self):
        return False

    def target_spec(self, image_shape):
        return {"input": TargetSpec((1, *image_shape), np.dtype(np.float32)),
                "target": TargetSpec((), np.dtype(np.int64), 0, 1)}

    def make_target(self, sample, rng):
        flip = bool(rng.random() < self.config.p)
        img = np.asarray(sample["image"], dtype=np.float32)
        return dict(sample, input=np.ascontiguousarray(img[:, :, ::-1]) if flip else img, target=np.int64(flip))

    def build_head(self, backbone):
        from cardiossl.backbones import HEADS

        return HEADS.get("classification")(backbone.encoder.channels[-1], 2)

    def loss(self, output, batch):
        return {"loss": F.cross_entropy(output, batch["target"].long())}

    def metrics(self, output, batch):
        return {"accuracy": (output.argmax(1) == batch["target"]).float().mean().item()}


THIRD_PARTY = "test_hflip"
CASES = [(name, cfg) for name in PRETEXTS.names() for cfg in PRETEXTS.get(name).variants()]
CASES.append((THIRD_PARTY, {}))


@pytest.fixture
def pretext_cls(request):
    name = request.param
    if name == THIRD_PARTY:
        PRETEXTS.add(THIRD_PARTY, HFlipPretext, source="tests/pretexts/test_contract.py:HFlipPretext")
        yield HFlipPretext
        PRETEXTS.unregister(THIRD_PARTY)
    else:
        yield PRETEXTS.get(name)


def _ids(case):
    name, cfg = case
    return name + ("-" + "-".join(f"{k}={v}" for k, v in cfg.items()) if cfg else "")


@pytest.mark.parametrize("pretext_cls, cfg", CASES, ids=[_ids(c) for c in CASES], indirect=["pretext_cls"])
class TestContract:
    def test_registered_and_documented(self, pretext_cls, cfg):
        assert PRETEXTS.get(pretext_cls.name) is pretext_cls
        assert describe(pretext_cls), "the first docstring line is what `cardiossl plugins list` shows"
        assert pretext_cls.Config.model_config.get("extra") == "forbid"

    def test_step_through_the_contract(self, pretext_cls, cfg):
        result = check_contract(pretext_cls(cfg), shape=(32, 32), batch_size=2, seed=3)
        assert np.isfinite(result["loss"]) and result["encoder_grad"] > 0

    @pytest.mark.gpu
    def test_step_on_cuda(self, pretext_cls, cfg):
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device")
        result = check_contract(pretext_cls(cfg), backbone="unet_bai", shape=(64, 64), batch_size=4, device="cuda")
        assert np.isfinite(result["loss"]) and result["encoder_grad"] > 0

    def test_non_square_and_other_size(self, pretext_cls, cfg):
        pretext = pretext_cls(cfg)
        if pretext.name == "rotation":  # 90-degree turns of a non-square image change its shape
            with pytest.raises(ValueError, match="need square images"):
                check_contract(pretext, shape=(48, 40), batch_size=3, seed=1)
            return
        check_contract(pretext, shape=(48, 40), batch_size=3, seed=1)

    def test_same_seed_same_target_other_seed_may_differ(self, pretext_cls, cfg):
        pretext = pretext_cls(cfg)
        samples = [s for s in example_subject(shape=(32, 32)) if pretext.accepts(sample_meta(s))]
        s = samples[0]
        image_before = s["image"].copy()
        a = pretext(s, np.random.default_rng([7, 0, 0, 1]))  # the CohortDataset transform call
        b = pretext.make_target(s, np.random.default_rng([7, 0, 0, 1]))
        for key in ("input", "target", "target_mask"):
            if key in a:
                np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_array_equal(s["image"], image_before)  # the sample is not modified
        assert "input" not in s

    def test_picklable_for_loader_workers(self, pretext_cls, cfg):
        pretext = pretext_cls(cfg)
        clone = pickle.loads(pickle.dumps(pretext))
        s = [x for x in example_subject(shape=(32, 32)) if pretext.accepts(sample_meta(x))][0]
        a = pretext.make_target(s, np.random.default_rng(5))
        b = clone.make_target(s, np.random.default_rng(5))
        np.testing.assert_array_equal(a["target"], b["target"])
        np.testing.assert_array_equal(a["input"], b["input"])

    def test_config_typo_is_refused_naming_the_pretext(self, pretext_cls, cfg):
        with pytest.raises(PretextConfigError, match=f"{pretext_cls.name}.*no_such_field"):
            pretext_cls({**cfg, "no_such_field": 1})

    def test_draw_and_annotations(self, pretext_cls, cfg):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        pretext = pretext_cls(cfg)
        s = [x for x in example_subject(shape=(32, 32)) if pretext.accepts(sample_meta(x))][0]
        t = pretext.make_target(s, np.random.default_rng(0))
        fig, ax = plt.subplots()
        pretext.draw(ax, t)
        assert ax.images, "draw() must show the input"
        plt.close(fig)
        ann = pretext.annotations(t)
        assert all(isinstance(v, np.ndarray) for v in ann.values())


def test_contract_check_catches_a_broken_pretext():
    """The checker itself must fail on a pretext that breaks its declared spec or seeds."""

    class Broken(HFlipPretext):
        name = "broken"

        def make_target(self, sample, rng):
            out = super().make_target(sample, np.random.default_rng())  # ignores the given generator
            out["target"] = np.int64(int(out["target"]) + 5)  # outside the declared 0..1
            return out

    with pytest.raises(AssertionError):
        check_contract(Broken())

    class NoGrad(HFlipPretext):
        name = "nograd"

        def forward(self, backbone, head, inputs):
            with torch.no_grad():
                feats = backbone.encoder(inputs)
            return head(feats[-1])

    with pytest.raises(AssertionError, match="no gradient reaches the encoder"):
        check_contract(NoGrad())


def test_config_instance_and_bad_type():
    cls = PRETEXTS.get("rotation")
    assert cls(cls.Config(n_rotations=2)).config.n_rotations == 2
    with pytest.raises(PretextConfigError, match="must be a dict"):
        cls(["n_rotations", 2])
