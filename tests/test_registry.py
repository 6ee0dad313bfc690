"""Registry, name grammar and model cards (facedeblur.models._registry)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import facedeblur
from facedeblur import ModelCard, ModelNotFoundError
from facedeblur.models import (TASKS, InferenceAdapter, _registry, adapter_for, card_from_dict, default_adapter,
                               get_arch, list_archs, parse_model_name, register_model, registry_scope,
                               unregister_model)

ALL = facedeblur.list_models()


def test_zoo_lists_the_cfmd_gan_variants() -> None:
    assert {"cfmd-gan.paper", "cfmd-gan.lite"} <= set(ALL)
    assert ALL == sorted(ALL)
    for name in ALL:
        card = facedeblur.model_info(name)
        assert card.name == name
        assert card.architecture in list_archs()
        assert card.task in TASKS
        assert card.source == "zoo"


@pytest.mark.parametrize("pattern, expected", [
    ("*", ALL),
    ("cfmd-gan", [n for n in ALL if n.startswith("cfmd-gan.")]),  # a family name lists its variants
    ("cfmd-gan*", [n for n in ALL if n.startswith("cfmd-gan")]),
    ("*.paper", ["cfmd-gan.paper", "chrysos-hg.paper", "chrysos.paper", "cyclegan-blur.paper", "cyclegan-srn.paper",
                 "dfpgnet.paper", "finenet.paper"]),
    ("*lite*", ["cfmd-gan.lite", "chrysos-hg.lite", "chrysos.lite", "cyclegan-blur.lite", "cyclegan-srn.lite",
                "dfpgnet.lite", "finenet.lite"]),
    ("chrysos", ["chrysos.lite", "chrysos.paper"]),  # a family is its name before the dot: not chrysos-hg.*
    ("cyclegan-srn", ["cyclegan-srn.lite", "cyclegan-srn.paper"]),
    ("cyclegan-*", [n for n in ALL if n.startswith("cyclegan-")]),
    ("no-such-model*", []),
])
def test_list_models_pattern(pattern: str, expected: list[str]) -> None:
    assert facedeblur.list_models(pattern) == expected


def test_list_models_task_filter() -> None:
    continuous = facedeblur.list_models(task="image-continuous")
    assert {"cfmd-gan.paper", "cfmd-gan.lite"} <= set(continuous)
    for task in TASKS:
        assert facedeblur.list_models(task=task) == [n for n in ALL if facedeblur.model_info(n).task == task]
    with pytest.raises(ValueError, match="task must be one of"):
        facedeblur.list_models(task="deblur-everything")


def test_list_models_pretrained_filter() -> None:
    with_weights = facedeblur.list_models(pretrained=True)
    without = facedeblur.list_models(pretrained=False)
    assert sorted(with_weights + without) == ALL
    assert not set(with_weights) & set(without)
    for name in with_weights:
        assert facedeblur.model_info(name).weights.available
    for name in without:
        assert not facedeblur.model_info(name).weights.available


def test_families_without_weights_have_no_default_variant() -> None:
    """CycleGAN->SRN's, FineNet's and DFPGnet's families ship no weights yet: no variant is a default, so the bare
    family name is not a model (it lists the variants), and every variant refuses to load rather than run random
    weights."""
    for family in ("cyclegan-srn", "cyclegan-blur", "finenet", "dfpgnet"):
        variants = facedeblur.list_models(family)
        assert len(variants) == 2 and not any(facedeblur.model_info(n).default for n in variants)
        with pytest.raises(ModelNotFoundError, match=f"{family}.lite"):
            facedeblur.model_info(family)
        for name in variants:
            with pytest.raises(facedeblur.WeightsNotAvailableError):
                facedeblur.load(name, device="cpu")


def test_family_resolves_to_its_default_variant() -> None:
    family = [n for n in ALL if n.startswith("cfmd-gan.")]
    defaults = [n for n in family if facedeblur.model_info(n).default]
    assert len(defaults) == 1, f"cfmd-gan needs exactly one default variant, found {defaults}"
    card = facedeblur.model_info("cfmd-gan")
    assert card.name == defaults[0]
    assert card.family == "cfmd-gan"
    assert card.default


@pytest.mark.parametrize("name", ["cfmd-gan.paper", "cfmd-gan.lite"])
def test_variant_names_resolve_to_themselves(name: str) -> None:
    card = facedeblur.model_info(name)
    assert card.name == name
    assert card.family == "cfmd-gan"
    assert parse_model_name(name) == ("zoo", name)


@pytest.mark.parametrize("name", ["cfmd-gan.paper", "cfmd-gan.lite"])
def test_model_info_contract_and_capabilities(name: str) -> None:
    card = facedeblur.model_info(name)
    assert card.architecture == "cfmd_gan"
    assert card.task == "image-continuous"
    assert card.paper.arxiv == "2207.06626"
    assert "Continuous Facial Motion Deblurring" in card.paper.title
    # Input contract (paper §5.1 / reference facts §1.1, §1.9): RGB in [0, 1], 256 px landmark crops, pad to 4.
    assert card.input.value_range == (0.0, 1.0)
    assert card.input.channel_order == "rgb"
    assert card.input.face_size == 256
    assert card.input.pad_multiple == 4
    assert "landmark" in card.input.face_crop
    # Capabilities: continuous u in [0, 1], one frame in.
    caps = card.capabilities
    assert caps.continuous_u is True
    assert caps.default_u is not None and 0.0 <= caps.default_u <= 1.0
    assert caps.frame_window == 1
    assert "float32" in caps.dtypes
    assert card.pretrained == card.weights.available
    assert card.license


def test_card_round_trips_through_dict() -> None:
    card = facedeblur.model_info("cfmd-gan.paper")
    data = card.to_dict()
    assert data["input"]["face_size"] == 256 and data["capabilities"]["continuous_u"] is True
    assert ModelCard.from_dict(data) == card


@pytest.mark.parametrize("name", ["org/repo", "C:\\x", "./model", "a:b"])
def test_path_like_names_are_rejected(name: str) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        facedeblur.model_info(name)
    msg = str(info.value)
    assert "hf-hub:" in msg and "local-dir:" in msg and repr(name) in msg
    with pytest.raises(ModelNotFoundError):
        facedeblur.create_model(name)


@pytest.mark.parametrize("name", ["", "   ", "hf-hub:", "local-dir:"])
def test_empty_names_are_rejected(name: str) -> None:
    with pytest.raises(ModelNotFoundError):
        parse_model_name(name)


def test_explicit_sources_parse() -> None:
    assert parse_model_name("hf-hub:org/repo@abc123") == ("hf-hub", "org/repo@abc123")
    assert parse_model_name("hf_hub:org/repo") == ("hf-hub", "org/repo")
    assert parse_model_name("local-dir:/tmp/m") == ("local-dir", "/tmp/m")


@pytest.mark.parametrize("name", ["cfmd-gan.papr", "cfmd-gan.full"])
def test_unknown_variant_lists_close_matches(name: str) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        facedeblur.model_info(name)
    msg = str(info.value)
    assert repr(name) in msg
    assert "cfmd-gan.paper" in msg and "cfmd-gan.lite" in msg
    assert isinstance(info.value, KeyError)  # also catchable as KeyError, like a dict lookup
    assert not msg.startswith('"')  # not quoted like a bare KeyError


def test_unknown_family_points_to_list_models() -> None:
    with pytest.raises(ModelNotFoundError, match="list_models"):
        facedeblur.model_info("no-such-model")
    with pytest.raises(ModelNotFoundError):
        facedeblur.create_model("no-such-model")


@pytest.mark.parametrize("name", ["cfmd-gan.lite", "cfmd-gan.paper"])
def test_create_model_uses_the_card_arch_kwargs(name: str) -> None:
    from facedeblur.models.cfmd_gan import CFMDGenerator

    card = facedeblur.model_info(name)
    model = facedeblur.create_model(name)
    assert isinstance(model, CFMDGenerator)
    kw = card.arch_kwargs
    assert model.stem.out_channels == kw["width"]
    assert all(len(stage) == kw["num_res"] for stage in (*model.encoder, *model.decoder))
    assert model.mapping.trunk[0].out_channels == kw["mapping_width"]
    assert len(model.mapping.trunk) == kw["mapping_layers"]
    assert model.encoder[0][0].cadc.mask_scale == kw["mask_scale"]
    assert model.pad_multiple == card.input.pad_multiple


def test_paper_variant_has_the_official_parameter_count() -> None:
    # Reference facts §1.5 [measured]: the authors' generator has 9,246,323 parameters.
    model = facedeblur.create_model("cfmd-gan.paper")
    assert sum(p.numel() for p in model.parameters()) == 9_246_323


def test_create_model_is_random_init_and_takes_overrides() -> None:
    torch.manual_seed(0)
    a = facedeblur.create_model("cfmd-gan.lite")
    torch.manual_seed(0)
    b = facedeblur.create_model("cfmd-gan.lite")
    torch.manual_seed(1)
    c = facedeblur.create_model("cfmd-gan.lite")
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["stem.weight"], sc["stem.weight"])
    small = facedeblur.create_model("cfmd-gan.lite", num_res=1, width=8)
    assert small.stem.out_channels == 8 and len(small.encoder[0]) == 1


def test_created_model_runs_with_u() -> None:
    torch.manual_seed(0)
    model = facedeblur.create_model("cfmd-gan.lite", num_res=1, width=8).eval()
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 16, 16), 0.5)
    assert [tuple(o.shape) for o in outs] == [(1, 3, 4, 4), (1, 3, 8, 8), (1, 3, 16, 16)]
    assert all(torch.isfinite(o).all() for o in outs)


def _paper_config() -> dict:
    data = facedeblur.model_info("cfmd-gan.paper").to_dict()
    data.pop("source")
    return data


def test_zoo_config_with_unknown_key_is_rejected() -> None:
    data = _paper_config()
    data["widht"] = 32
    with pytest.raises(ValueError, match="widht"):
        ModelCard.from_dict(data)


@pytest.mark.parametrize("section", ["input", "capabilities", "weights", "paper"])
def test_zoo_config_with_unknown_nested_key_is_rejected(section: str) -> None:
    data = _paper_config()
    data[section] = {**data[section], "bogus_key": 1}
    with pytest.raises(ValueError, match="bogus_key"):
        ModelCard.from_dict(data)


def test_card_without_task_takes_the_architecture_task() -> None:
    data = _paper_config()
    data.pop("task")
    assert card_from_dict(data).task == get_arch("cfmd_gan").task
    assert ModelCard.from_dict(data, task_of=lambda arch: "video").task == "video"
    with pytest.raises(ValueError, match="no 'task'.*card_from_dict"):
        ModelCard.from_dict(data)  # facedeblur.cards knows no registry: the task must come from somewhere


def test_cards_module_is_low_level() -> None:
    """facedeblur.cards imports nothing from facedeblur.models or facedeblur.weights (no import circle), and the
    registry re-exports its types."""
    import ast
    import inspect

    from facedeblur import cards

    tree = ast.parse(inspect.getsource(cards))
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if "models" in m or "weights" in m or m.startswith("torch")], imported
    for name in ("ModelCard", "WeightsSpec", "InputContract", "Capabilities", "PaperRef", "TRAINING_RECORD_KEYS"):
        assert getattr(_registry, name) is getattr(cards, name)
    assert facedeblur.ModelCard is cards.ModelCard


def test_unknown_architecture() -> None:
    with pytest.raises(ModelNotFoundError, match="cfmd_gan"):
        get_arch("no_such_arch")


def test_register_model_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_ARCHS", dict(_registry._ARCHS))  # leave the real registry untouched
    with pytest.raises(ValueError, match="task must be one of"):
        register_model("tmp_arch", task="segmentation")

    @register_model("tmp_arch", task="image")
    def tmp_arch() -> torch.nn.Module:
        return torch.nn.Identity()

    assert _registry._ARCHS["tmp_arch"].builder is tmp_arch
    register_model("tmp_arch", task="image")(tmp_arch)  # same function again: fine (re-import)
    with pytest.raises(ValueError, match="registered twice"):
        register_model("tmp_arch", task="image")(lambda: torch.nn.Identity())


def test_cards_are_values_not_shared_state() -> None:
    """A card is read from its zoo config on every call: changing the mutable parts of one (its arch_kwargs, training,
    metrics) changes neither the next card nor the network ``create_model`` builds; and a card survives the
    ``config.json`` round trip (``to_dict`` / ``card_from_dict``) unchanged."""
    from pathlib import Path

    import yaml

    zoo = yaml.safe_load((Path(__file__).resolve().parents[1] / "zoo_configs" / "cfmd-gan.lite.yaml").read_text())
    card = facedeblur.model_info("cfmd-gan.lite")
    card.arch_kwargs["width"] = 999
    card.training.clear()
    card.metrics["tampered"] = True
    again = facedeblur.model_info("cfmd-gan.lite")
    assert again.arch_kwargs == zoo["arch_kwargs"] and again.arch_kwargs["width"] != 999
    assert again.training and "tampered" not in again.metrics
    built = facedeblur.create_model("cfmd-gan.lite").state_dict()
    reference = get_arch(zoo["architecture"]).builder(**zoo["arch_kwargs"]).state_dict()
    assert {k: v.shape for k, v in built.items()} == {k: v.shape for k, v in reference.items()}
    fresh = facedeblur.model_info("cfmd-gan.paper")
    assert card_from_dict(fresh.to_dict()) == fresh
    with pytest.raises(dataclasses.FrozenInstanceError):
        fresh.name = "other"  # type: ignore[misc]


def test_model_files_declare_what_they_register() -> None:
    """``facedeblur.models.MODEL_FILES`` lists each model file with the architectures it registers and their tasks
    (so cards are read without importing it); the registry must agree, and refuses a disagreeing registration."""
    from facedeblur.models import MODEL_FILES, _ensure_loaded

    _ensure_loaded()
    for module, archs in MODEL_FILES.items():
        registered = {n for n, e in _registry._ARCHS.items() if e.builder.__module__ == f"facedeblur.models.{module}"}
        assert registered == set(archs), (module, registered, archs)
        for name, task in archs.items():
            assert get_arch(name).task == task
    name, task = next(iter(next(iter(MODEL_FILES.values())).items()))
    other = next(t for t in TASKS if t != task)
    with pytest.raises(ValueError, match="MODEL_FILES declares"):
        register_model(name, task=other)


def test_zoo_cards_are_read_without_the_model_files() -> None:
    """A fresh interpreter lists the zoo and reads every card (with its task) without importing a model file or
    torch: what ``facedeblur list`` / ``info`` rely on."""
    import subprocess
    import sys

    code = ("import sys, facedeblur; cards = [facedeblur.model_info(n) for n in facedeblur.list_models()]; "
            "print(sorted({c.task for c in cards}), [m for m in ('torch', 'facedeblur.models.cfmd_gan') "
            "if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{sorted({facedeblur.model_info(n).task for n in ALL})} []"


def test_adapters_by_task_and_registration() -> None:
    """The adapter says how a network is called and which output is the image; CFMD-GAN registers its own."""
    x, u = torch.rand(2, 3, 8, 8), torch.tensor([0.2, 0.8])

    def plain(t):
        return t * 2

    def controlled(t, uu):
        return [t[..., ::2, ::2], t * uu.view(-1, 1, 1, 1)]

    image, cont = default_adapter("image"), default_adapter("image-continuous")
    assert not image.control and cont.control and not cont.multiscale
    assert torch.equal(image(plain, x), x * 2)
    multi = InferenceAdapter(control=True, multiscale=True)
    assert torch.equal(multi(controlled, x, u), x * u.view(-1, 1, 1, 1))
    assert torch.equal(multi.final(x), x)  # a single tensor counts as one scale
    with pytest.raises(TypeError, match="adapter expects a tensor"):
        image(lambda t: [t], x)  # a list from a single-output network is a registration mistake, not guessed
    with pytest.raises(facedeblur.CapabilityError, match="control factor u"):
        multi(controlled, x)
    assert torch.equal(multi.controls({"u": [0.2, 0.8]}), u) and image.controls({"u": u}) is None
    with pytest.raises(facedeblur.DataError, match="no 'u'"):
        multi.controls({"blurry": x})
    cfmd = get_arch("cfmd_gan").adapter
    assert cfmd.control and cfmd.multiscale
    card = facedeblur.model_info("cfmd-gan.lite")
    assert adapter_for(card) is cfmd
    # a card that describes a stand-in network of another task: one output, u as its capabilities say
    assert adapter_for(dataclasses.replace(card, task="video")) == InferenceAdapter(control=True)
    no_u = dataclasses.replace(card.capabilities, continuous_u=False, default_u=None)
    assert adapter_for(dataclasses.replace(card, task="image", capabilities=no_u)) == default_adapter("image")
    with pytest.raises(ValueError, match="task must be one of"):
        default_adapter("segmentation")


def test_registry_scope_and_unregister_clean_up() -> None:
    before = list_archs()
    with registry_scope():
        @register_model("scoped_arch", task="image", adapter=InferenceAdapter(multiscale=True))
        def scoped_arch() -> torch.nn.Module:
            return torch.nn.Identity()

        assert get_arch("scoped_arch").adapter.multiscale and "scoped_arch" in list_archs()
        assert unregister_model("scoped_arch").builder is scoped_arch
        assert unregister_model("scoped_arch") is None
        register_model("scoped_arch", task="image")(scoped_arch)
    assert list_archs() == before and "cfmd_gan" in before
    with pytest.raises(TypeError, match="InferenceAdapter"):
        register_model("bad_adapter", task="image", adapter=lambda m, x: m(x))  # type: ignore[arg-type]


def test_zoo_configs_of_a_source_checkout(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Imported from a checkout that is not (editably) installed, facedeblur has no ``facedeblur.zoo_configs``
    package: the checkout's ``zoo_configs/`` next to the package is read instead; with neither, a typed error says to
    reinstall (never an empty zoo)."""
    import shutil
    from pathlib import Path

    from facedeblur.models import zoo

    def missing(package):
        raise ModuleNotFoundError(f"No module named {package!r}")

    monkeypatch.setattr(zoo.resources, "files", missing)
    checkout = tmp_path / "clone"
    (checkout / "facedeblur" / "models").mkdir(parents=True)
    (checkout / "zoo_configs").mkdir()
    (checkout / "zoo_configs" / "__init__.py").write_text("")
    shutil.copy(Path(__file__).resolve().parents[1] / "zoo_configs" / "cfmd-gan.paper.yaml", checkout / "zoo_configs")
    monkeypatch.setattr(zoo, "__file__", str(checkout / "facedeblur" / "models" / "zoo.py"))
    assert zoo.list_models() == ["cfmd-gan.paper"]
    assert zoo.get_card("cfmd-gan.paper").arch_kwargs["width"] == 32
    shutil.rmtree(checkout / "zoo_configs")
    with pytest.raises(ModelNotFoundError, match="reinstall"):
        zoo.list_models()
