"""Joint training of an English -> Spanish translator on two registers of the Bible (Sec. 5.4).

Data: the aligned King James / Reina-Valera 1909 verses (``data.load_bible_parallel``).

* Main: the narrative and historical books, Genesis to Esther (prose; about 13 k verse pairs).
* Aux: a small set of verses of another register, Hebrew poetry (Psalms and Proverbs):
  :data:`AUX_TRAIN_VERSES` verse pairs for training.
* Eval: held-out verse pairs of both, drawn at random once with a fixed seed (the same for
  every run), disjoint from the training verses.

Both sides are bytes (UTF-8) truncated to ``max_len - 1`` bytes, plus BOS/EOS/PAD ids
(``text_data.encode_pairs``); losses are the decoder's cross-entropy in nats per target byte
(teacher forcing), averaged over every target token of the set. A tiny encoder-decoder
transformer (``models.Seq2Seq``) is trained with Adam and a warm-up + cosine schedule, the same
for every method and lam; each step draws one batch of main pairs and one of aux pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from .. import data as datasets
from ..data.text_batches import PAD, PAIR_VOCAB_SIZE, PairSampler, encode_pairs, pair_batches
from ..models import Seq2Seq, count_parameters
from ..sweep.registry import Experiment, Record, RunSpec, register
from ..sweep.training import cosine_with_warmup, set_seed, train

MAIN_BOOKS = (
    "Gen",
    "Exod",
    "Lev",
    "Num",
    "Deut",
    "Josh",
    "Judg",
    "Ruth",
    "1Sam",
    "2Sam",
    "1Kgs",
    "2Kgs",
    "1Chr",
    "2Chr",
    "Ezra",
    "Neh",
    "Esth",
)
AUX_BOOKS = ("Ps", "Prov")
AUX_TRAIN_VERSES = 1000
SPLIT_SEED = 12345


@dataclass(frozen=True)
class MTConfig:
    """Model, data sizes and schedule of one budget (recorded in each run's ``config``)."""

    d_model: int
    n_enc_layers: int
    n_dec_layers: int
    n_heads: int
    max_len: int
    batch_size: int
    steps: int
    eval_points: int
    eval_pairs: int
    lr: float = 2e-3
    warmup_fraction: float = 0.05


MT_CONFIGS = {
    "smoke": MTConfig(
        d_model=32,
        n_enc_layers=1,
        n_dec_layers=1,
        n_heads=2,
        max_len=24,
        batch_size=8,
        steps=12,
        eval_points=3,
        eval_pairs=32,
    ),
    "default": MTConfig(
        d_model=64,
        n_enc_layers=1,
        n_dec_layers=1,
        n_heads=4,
        max_len=64,
        batch_size=16,
        steps=300,
        eval_points=5,
        eval_pairs=200,
    ),
    "paper": MTConfig(
        d_model=128,
        n_enc_layers=4,
        n_dec_layers=4,
        n_heads=4,
        max_len=128,
        batch_size=32,
        steps=5000,
        eval_points=50,
        eval_pairs=1000,
        lr=1e-3,
    ),
}
LAMS = {
    "smoke": (0.0, 1.0),
    "default": (0.0, *np.logspace(-2, 1, 4).tolist()),
    "paper": (0.0, *np.logspace(-4, 1, 16).tolist()),
}


_CACHE: dict[tuple[object, ...], dict[str, list[tuple[str, str]]]] = {}


def split_verses(eval_pairs: int) -> dict[str, list[tuple[str, str]]]:
    """``{"train_main", "eval_main", "train_aux", "eval_aux"}`` lists of (English, Spanish) pairs.

    Cached per process (a sweep worker runs many runs), keyed by the loader and ``eval_pairs``.

    Raises:
        ValueError: too few verses of either part for the requested sizes.
    """
    key = (datasets.load_bible_parallel, eval_pairs)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = _split_verses(eval_pairs)
    return _CACHE[key]


def _split_verses(eval_pairs: int) -> dict[str, list[tuple[str, str]]]:
    verses = datasets.load_bible_parallel()
    main = [(v.en, v.es) for v in verses if v.book in MAIN_BOOKS]
    aux = [(v.en, v.es) for v in verses if v.book in AUX_BOOKS]
    n_aux_train = min(AUX_TRAIN_VERSES, len(aux) - eval_pairs)
    if len(main) <= eval_pairs or n_aux_train < 1:
        raise ValueError(
            f"Invalid Bible data: {len(main)} main and {len(aux)} aux verses; need more than "
            f"eval_pairs={eval_pairs} of each; re-fetch the dataset"
        )
    g = torch.Generator().manual_seed(SPLIT_SEED)
    pm = torch.randperm(len(main), generator=g).tolist()
    pa = torch.randperm(len(aux), generator=g).tolist()
    return {
        "eval_main": [main[i] for i in pm[:eval_pairs]],
        "train_main": [main[i] for i in pm[eval_pairs:]],
        "eval_aux": [aux[i] for i in pa[:eval_pairs]],
        "train_aux": [aux[i] for i in pa[eval_pairs : eval_pairs + n_aux_train]],
    }


def _mean_loss(model: Seq2Seq, batches: Sequence[tuple[torch.Tensor, ...]]) -> float:
    """Cross-entropy per target token over all non-padding targets of ``batches``."""
    total, count = 0.0, 0
    for src, tgt_in, tgt_out in batches:
        n = int((tgt_out != PAD).sum())
        total += float(model.loss(src, tgt_in, tgt_out)) * n
        count += n
    return total / count


def run(spec: RunSpec) -> Record:
    """One run of the translation experiment under ``spec.budget``."""
    cfg = MT_CONFIGS[spec.budget]
    generator = set_seed(spec.seed)
    parts = split_verses(cfg.eval_pairs)
    encoded = {k: encode_pairs(v, cfg.max_len) for k, v in parts.items()}
    model = Seq2Seq(
        vocab_size=PAIR_VOCAB_SIZE,
        d_model=cfg.d_model,
        n_enc_layers=cfg.n_enc_layers,
        n_dec_layers=cfg.n_dec_layers,
        n_heads=cfg.n_heads,
        max_len=cfg.max_len,
        pad_id=PAD,
    )
    main_sampler = PairSampler(
        encoded["train_main"], batch_size=cfg.batch_size, generator=generator
    )
    aux_sampler = PairSampler(
        encoded["train_aux"],
        batch_size=cfg.batch_size,
        generator=torch.Generator().manual_seed(1_000_003 + spec.seed),
    )
    # Training-set losses on a fixed subset of the training pairs, as large as the eval sets.
    n = cfg.eval_pairs
    fixed = {k: pair_batches((v[0][:n], v[1][:n], v[2][:n]), 64) for k, v in encoded.items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = cosine_with_warmup(
        optimizer, total_steps=cfg.steps, warmup_steps=round(cfg.warmup_fraction * cfg.steps)
    )
    config: dict[str, Any] = {
        **asdict(cfg),
        "parameters": count_parameters(model),
        "main": f"Bible {MAIN_BOOKS[0]}-{MAIN_BOOKS[-1]} (narrative/historical), KJV -> RV1909",
        "aux": f"Bible {' + '.join(AUX_BOOKS)} (poetry), {len(parts['train_aux'])} verse pairs",
        "pairs": {k: len(v) for k, v in parts.items()},
        "optimizer": "Adam",
        "schedule": "linear warm-up, cosine to 0",
        "loss_unit": "nats per target byte (teacher forcing)",
    }
    return train(
        spec,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        batches=zip(main_sampler, aux_sampler, strict=False),
        main_loss=lambda m, batch: model.loss(*batch[0]),
        aux_loss=lambda m, batch: model.loss(*batch[1]),
        steps=cfg.steps,
        evaluate=lambda: {k: _mean_loss(model, b) for k, b in fixed.items()},
        eval_every=max(1, cfg.steps // cfg.eval_points),
        config=config,
    )


register(
    Experiment(
        name="translation",
        title="Joint training of an English -> Spanish translator: Bible prose (main) + poetry (aux)",
        paper_ref="Sec. 5.4",
        kind="sweep",
        run=run,
        lams=LAMS,
        datasets=("bible",),
        description=(
            "Tiny byte-level encoder-decoder transformer translating KJV English into Reina-Valera "
            "1909 Spanish. Main: verse pairs of Genesis-Esther (narrative/historical prose); aux: "
            "1000 verse pairs of Psalms + Proverbs (poetry); eval: 200 held-out verse pairs of "
            "each (fixed random split; train losses on 200 fixed training pairs). Default budget: "
            "both sides truncated to 63 bytes + EOS, d_model 64, 1 encoder + 1 decoder layer, 4 "
            "heads, 0.15 M parameters, batch 16 main + 16 aux pairs, 300 Adam steps (lr 2e-3, 5% "
            "warm-up, cosine to 0) for every method and lam; lam in {0.01, 0.1, 1, 10} plus 0, "
            "Bloop rho = 0.01; one seed. Losses: teacher-forced cross-entropy per target byte "
            "(no BLEU). The paper used a 6 + 6 transformer with Adam 2e-4; the paper's claim: "
            "Bloop's front is clearly better, also on eval."
        ),
    )
)
