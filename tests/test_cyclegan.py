"""CycleGAN, the learned-blur stage of CycleGAN->SRN (facedeblur.models.cyclegan, facedeblur.train.methods.cyclegan):
parameter counts, the networks' contract, the image pool, the cycle-consistency and LSGAN losses, and short runs of
the two-generator training through the generic trainer (resume bit for bit, export of G only)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

import facedeblur
from tinymodels import BoxBlurPairs
from facedeblur.errors import InputError
from facedeblur.models import get_arch, get_card
from facedeblur.models.cyclegan import PatchDiscriminator, ResnetGenerator
from facedeblur.train import methods
from facedeblur.train.losses import LossWeights
from facedeblur.train.methods.cyclegan import (CycleDiscriminators, CycleGANMethod, CycleGenerators, ImagePool,
                                               discriminator_loss, generator_loss)
from facedeblur.train.recipes import RecipeError
from facedeblur.train.trainer import Trainer, TrainOptions

FAST = {"workers": 0, "threads": 1, "progress": False, "log_every": 1}
TINY_ARCH = {"width": 4, "blocks": 1}
TINY_RECIPE = {"crop": 32, "batch": 2, "epoch_samples": 4, "discriminator": {"width": 4, "layers": 2}}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------------------------------ networks


def test_paper_parameter_counts() -> None:
    """REFERENCE_FACTS §8 (computed on the authors' definitions): 11,378,179 and 2,764,737."""
    g = facedeblur.create_model("cyclegan-blur.paper")
    assert isinstance(g, ResnetGenerator) and n_params(g) == 11_378_179
    assert n_params(PatchDiscriminator(**get_card("cyclegan-blur.paper").training["discriminator"])) == 2_764_737

    def generator_arithmetic(f: int, blocks: int) -> int:  # c7s1-f, d2f, d4f, blocks x R4f, u2f, uf, c7s1-3
        conv = lambda cin, cout, k: cin * cout * k * k + cout  # noqa: E731
        return (conv(3, f, 7) + conv(f, 2 * f, 3) + conv(2 * f, 4 * f, 3) + blocks * 2 * conv(4 * f, 4 * f, 3)
                + conv(4 * f, 2 * f, 3) + conv(2 * f, f, 3) + conv(f, 3, 7))

    assert generator_arithmetic(64, 9) == 11_378_179
    lite = facedeblur.create_model("cyclegan-blur.lite")
    assert n_params(lite) == generator_arithmetic(32, 6) == 1_965_059
    assert n_params(PatchDiscriminator(width=32)) == 694_241  # every width / 2: about a quarter of the weights


def test_generator_contract() -> None:
    g = ResnetGenerator(width=4, blocks=1)
    norms = [m for m in g.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(not m.affine and not m.track_running_stats for m in norms)  # CycleGAN's IN
    assert sum(isinstance(m, nn.ReflectionPad2d) for m in g.modules()) == 4  # 7x7 in/out, 2 per residual block
    assert not any(isinstance(m, (nn.Dropout, nn.BatchNorm2d)) for m in g.modules())
    x = torch.rand(2, 3, 12, 20)
    y = g(x)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1  # [0, 1] in and out (tanh mapped back)
    ref = (g.net(2 * x - 1) + 1) / 2  # CycleGAN's arithmetic in [-1, 1] inside
    torch.testing.assert_close(y, ref)
    for bad in ((1, 3, 10, 12), (1, 3, 4, 4), (1, 1, 12, 12)):
        with pytest.raises(InputError, match="divisible by 4|RGB tensors"):
            g(torch.rand(*bad))


def test_patchgan_scores_70x70_patches() -> None:
    d = PatchDiscriminator(width=4)
    assert d(torch.rand(1, 3, 256, 256)).shape == (1, 1, 30, 30)  # the 70x70 PatchGAN's map on a 256 px image
    assert d(torch.rand(2, 3, 24, 40)).shape == (2, 1, 1, 3)
    with pytest.raises(InputError, match="at least 24"):
        d(torch.rand(1, 3, 16, 16))
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1] and all(c.kernel_size == (4, 4) for c in convs)
    assert not isinstance(d.net[1], nn.InstanceNorm2d)  # no norm after the first conv


def test_registration_and_cards() -> None:
    arch = get_arch("cyclegan_blur")
    assert arch.task == "image" and arch.discriminator == "cyclegan_patchgan"
    assert not arch.adapter.control and not arch.adapter.multiscale
    assert methods.get_method("cyclegan_blur") is CycleGANMethod
    for name in ("cyclegan-blur.paper", "cyclegan-blur.lite"):
        card = get_card(name)
        assert card.family == "cyclegan-blur" and not card.pretrained and not card.default
        assert card.input.pad_multiple == ResnetGenerator.pad_multiple
        with pytest.raises(facedeblur.WeightsNotAvailableError):
            facedeblur.load(name, device="cpu")
        loss = card.training["loss"]
        assert (loss["adv"], loss["cyc"], loss["idt"]) == (1.0, 10.0, 0.5)  # LSGAN weight 1, lambda 10, 0.5 lambda


# ------------------------------------------------------------------------------------------ image pool


def test_image_pool_fills_then_swaps_half_the_time() -> None:
    pool = ImagePool(50, generator=torch.Generator().manual_seed(0))
    first = torch.arange(50, dtype=torch.float32).view(50, 1, 1, 1).expand(50, 3, 2, 2).contiguous()
    out = pool.query(first.requires_grad_())
    assert torch.equal(out, first.detach()) and not out.requires_grad and len(pool) == 50  # stored, returned as is
    stored_ids = {float(t[0, 0, 0]) for t in pool.images}
    swaps, n = 0, 2000
    for k in range(n):
        new = torch.full((1, 3, 2, 2), 1000.0 + k)
        got = pool.query(new)
        value = float(got[0, 0, 0, 0])
        if value == 1000.0 + k:  # passed on as it is, and not stored
            assert value not in {float(t[0, 0, 0]) for t in pool.images}
        else:  # a stored image came back and the new one took its place
            assert value in stored_ids
            swaps += 1
            stored_ids.remove(value)
            stored_ids.add(1000.0 + k)
        assert len(pool) == 50 and stored_ids == {float(t[0, 0, 0]) for t in pool.images}
    assert 0.45 < swaps / n < 0.55  # probability 1/2


def test_image_pool_is_deterministic_with_a_seeded_generator() -> None:
    def run(seed: int) -> torch.Tensor:
        pool = ImagePool(3, generator=torch.Generator().manual_seed(seed))
        return torch.cat([pool.query(torch.full((2, 1, 1, 1), float(i))) for i in range(20)])

    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))
    empty = ImagePool(0)
    x = torch.rand(2, 3, 4, 4)
    assert torch.equal(empty.query(x), x) and len(empty) == 0
    with pytest.raises(ValueError):
        ImagePool(-1)
    src = ImagePool(3)
    src.query(torch.rand(2, 3, 4, 4))
    dst = ImagePool(3)
    dst.load(src.state())
    assert len(dst) == 2 and all(torch.equal(a, b) for a, b in zip(src.images, dst.images))
    with pytest.raises(RecipeError, match="holds up to"):
        ImagePool(5).load(src.state())


# ------------------------------------------------------------------------------------------ losses


class _Shift(nn.Module):
    def __init__(self, by: float) -> None:
        super().__init__()
        self.by = by

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.by


def test_cycle_consistency_on_a_toy_pair() -> None:
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    w = LossWeights(adv=1.0, cyc=10.0, idt=0.5)
    _, parts = generator_loss(CycleGenerators(nn.Identity(), nn.Identity())(x, y), x, y, None, None, w)
    assert parts["g_cyc"].item() == 0 and parts["g_idt"].item() == 0 and parts["g_total"].item() == 0
    a, b = 0.1, 0.04  # G(x) = x + a, F(y) = y - b: F(G(x)) = x + a - b, G(F(y)) = y + a - b
    out = CycleGenerators(_Shift(a), _Shift(-b))(x, y)
    total, parts = generator_loss(out, x, y, None, None, w)
    assert parts["g_cyc_sharp"].item() == pytest.approx(a - b) and parts["g_cyc_blurry"].item() == pytest.approx(a - b)
    assert parts["g_idt"].item() == pytest.approx(a + b)  # |G(y) - y| + |F(x) - x|
    assert total.item() == pytest.approx(10 * 2 * (a - b) + 10 * 0.5 * (a + b))
    assert "idt_blurry" not in CycleGenerators(_Shift(a), _Shift(-b))(x, y, identity=False)
    # LSGAN terms: a generator that fools D (scores 1) pays nothing; scores 0 cost 1 per domain
    _, parts = generator_loss(out, x, y, torch.ones(2, 1, 3, 3), torch.ones(2, 1, 3, 3), w)
    assert parts["g_adv"].item() == 0
    _, parts = generator_loss(out, x, y, torch.zeros(2, 1, 3, 3), torch.zeros(2, 1, 3, 3), w)
    assert parts["g_adv"].item() == pytest.approx(2.0)
    ones, zeros = torch.ones(2, 1, 3, 3), torch.zeros(2, 1, 3, 3)
    assert discriminator_loss(ones, zeros, ones, zeros)[0].item() == 0  # a perfect D
    assert discriminator_loss(zeros, ones, zeros, ones)[0].item() == pytest.approx(2.0)  # 0.5 (1 + 1) per D


# ------------------------------------------------------------------------------------------ training


class _Unpaired(Dataset):
    """``unpaired`` samples: smooth random 'sharp' faces and unrelated horizontally smeared 'real blurry' ones."""

    kind = "unpaired"

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        smooth = lambda: F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(32, 32), mode="bilinear",  # noqa
                                       align_corners=False)
        self.sharp = smooth()
        self.blurry = F.avg_pool2d(F.pad(smooth(), (3, 3, 0, 0), mode="replicate"), (1, 7), stride=1)

    def __len__(self) -> int:
        return len(self.sharp)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = int(torch.randint(0, len(self.blurry), ()))  # unrelated pairing, drawn from the seeded global RNG
        return {"sharp": self.sharp[i].clone(), "real_blurry": self.blurry[j].clone()}



def _Pairs(n: int, seed: int) -> BoxBlurPairs:
    return BoxBlurPairs(n, seed, taps=7)


def _trainer(tmp_path, name: str, **opts) -> Trainer:
    recipe = {**TINY_RECIPE, **opts.pop("recipe", {})}
    return Trainer("cyclegan-blur.lite", _Unpaired(4, 0), _Pairs(2, 1), out_dir=tmp_path / name,
                   arch_overrides=TINY_ARCH, recipe_overrides=recipe, options=TrainOptions(**{**FAST, **opts}))


def _equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_generators_two_discriminators_train_and_g_is_exported(tmp_path) -> None:
    tr = _trainer(tmp_path, "run", max_steps=2, val_every=0, recipe={"ema": 0.5})
    assert tr.gan and isinstance(tr.g, CycleGenerators) and isinstance(tr.d, CycleDiscriminators)
    assert isinstance(tr.d.d_blurry, PatchDiscriminator) and isinstance(tr.d.d_sharp, PatchDiscriminator)
    assert tr.ema.state_dict().keys() == tr.g.blur.state_dict().keys()  # the EMA is of G, the shipped network
    n_g = n_params(tr.g.blur) + n_params(tr.g.deblur)
    assert sum(p.numel() for grp in tr.opt_g.param_groups for p in grp["params"]) == n_g  # one optimiser, G and F
    before = {k: v.clone() for k, v in {**tr.g.state_dict(), **tr.d.state_dict()}.items()}
    res = tr.run()
    assert res.status == "max_steps" and res.step == 2
    after = {**tr.g.state_dict(), **tr.d.state_dict()}
    for part in ("blur.", "deblur.", "d_blurry.", "d_sharp."):  # all four networks were updated
        assert any(not torch.equal(before[k], v) for k, v in after.items() if k.startswith(part)), part
    assert len(tr.method.pool_blurry) == len(tr.method.pool_sharp) == 4  # 2 steps x batch 2, pool of 50
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    rows = [r for r in log if r["type"] == "train"]
    assert all({"g_adv", "g_cyc", "g_idt", "d_blurry", "d_sharp", "d_total", "g_total"} <= set(r) for r in rows)
    # validation: G(sharp) against the paired blurry image, the sharp image as the baseline
    table = res.last_validation
    val = _Pairs(2, 1)
    with torch.no_grad():
        outs = [torch.round(tr._eval_model()(val[i]["sharp"][None]).clamp(0, 1) * 255) / 255 for i in range(2)]
    from facedeblur.train.validation import psnr
    want = np.mean([psnr(o, val[i]["blurry"][None]).item() for i, o in enumerate(outs)])
    base = np.mean([psnr(val[i]["sharp"][None], val[i]["blurry"][None]).item() for i in range(2)])
    assert table["psnr"] == pytest.approx(want, abs=1e-6) and table["psnr_blurry"] == pytest.approx(base, abs=1e-6)
    # export: G only, loadable as the zoo architecture
    exported = load_file(str(tmp_path / "run" / "export" / "model.safetensors"))
    assert exported.keys() == ResnetGenerator(**TINY_ARCH).state_dict().keys()
    d = facedeblur.load(f"local-dir:{tmp_path / 'run' / 'export'}", device="cpu")
    assert d.card.architecture == "cyclegan_blur"
    assert d.restore(np.zeros((18, 22, 3), np.uint8), faces=False).shape == (18, 22, 3)
    # --init from the run's checkpoint takes G out of the two-generator state
    state = tr.method.reset_loaded_state(dict(tr.g.state_dict()), tr.g.blur)
    assert _equal(state, tr.g.blur.state_dict())


def test_resume_continues_bit_for_bit_with_the_pool(tmp_path) -> None:
    class SmallPool(CycleGANMethod):
        pool_size = 3  # full after 2 steps of batch 2: the swap draws run across the resume

    with methods.registry_scope():
        methods.unregister_method("cyclegan_blur")
        methods.register_method("cyclegan_blur")(SmallPool)
        straight = _trainer(tmp_path, "straight", max_steps=4, val_every=0, ckpt_every=0)
        straight.run()
        assert _trainer(tmp_path, "resumed", max_steps=2, val_every=0, ckpt_every=0).run().step == 2
        second = _trainer(tmp_path, "resumed", max_steps=4, val_every=0, ckpt_every=0)
        assert second.resumed_from and len(second.method.pool_sharp) == 3  # the pools came back with the checkpoint
        second.run()
    assert _equal(straight.g.state_dict(), second.g.state_dict())
    assert _equal(straight.d.state_dict(), second.d.state_dict())
    for a, b in ((straight.method.pool_blurry, second.method.pool_blurry),
                 (straight.method.pool_sharp, second.method.pool_sharp)):
        assert len(a) == len(b) == 3 and all(torch.equal(x, y) for x, y in zip(a.images, b.images))


def test_cyclegan_refuses_to_train_without_its_gan(tmp_path) -> None:
    with pytest.raises(RecipeError, match="adversarially"):
        _trainer(tmp_path, "nogan", gan=False)
    with pytest.raises(RecipeError, match="loss.cyc"):
        _trainer(tmp_path, "nocyc", recipe={"loss": {"cyc": 0.0}})
    with pytest.raises(facedeblur.DataError, match="'unpaired' samples"):
        Trainer("cyclegan-blur.lite", _Pairs(2, 0), None, out_dir=tmp_path / "pairs", arch_overrides=TINY_ARCH,
                recipe_overrides=TINY_RECIPE, options=TrainOptions(**FAST))
