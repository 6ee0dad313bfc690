"""Ablation (session 6): cfmd-gan.lite with num_res=1 (about 2x the samples/s), from scratch, same strong recipe.

Run from the repository root: ``OMP_NUM_THREADS=1 python benchmarks/ablation_num_res1.py`` (run folder
``runs/lite-strong-nr1``; resumes when it exists). Its log from session 6 is
``benchmarks/results/training/cfmd-gan.lite_session6_ablation_num_res1_log.jsonl``; the comparison is in the
CFMD-GAN model card (Session 6 record)."""
import dataclasses
import torch
from facedeblur.data.engine import build_datasets
from facedeblur.models import get_card
from facedeblur.train.recipes import read_config, resolve_recipe
from facedeblur.train.trainer import train

torch.set_num_threads(1)
card = get_card("cfmd-gan.lite")
config = read_config("zoo_configs/finetune/cfmd-gan.lite.strong.yaml")
rec = resolve_recipe(card.training, config, {"loss": {"adv": 0.0, "ar": 0.0}})
tr, va = build_datasets("../shared/data", dataclasses.replace(card, training={**card.training, **rec.to_dict()}),
                        cache_dir="cache", progress=False)
train(card, tr, va, out_dir="runs/lite-strong-nr1", config=config, recipe_overrides={"loss": {"adv": 0.0, "ar": 0.0}, "ema": 0.999},
      arch_overrides={"num_res": 1}, gan=False, val_every=250, val_max=40, ckpt_every=50, log_every=25, threads=1,
      workers=1, progress=False, data_desc="shared/data")
