"""Text experiments (joint_lm, translation, ema_ablation), their models and batching.

The dataset loaders are monkeypatched with small synthetic corpora of two visibly different
styles (prose vs upper-case verse; English vs a pseudo-Spanish), so these tests need no
downloaded data and run in seconds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import torchbloop.experiments.data as datasets
from torchbloop.experiments import cli
from torchbloop.experiments.data import Verse
from torchbloop.experiments.data.text_batches import (
    BOS,
    EOS,
    PAD,
    PairSampler,
    WindowSampler,
    encode,
    encode_pairs,
    eval_windows,
    holdout_split,
    pair_batches,
    windows_at,
)
from torchbloop.experiments.models import CausalLM, Seq2Seq, count_parameters
from torchbloop.experiments.sweep.registry import RunSpec, get
from torchbloop.experiments.sweep.results import (
    LOSS_KEYS,
    complete_record,
    read_records,
    validate_record,
)
from torchbloop.experiments.tasks import ema_ablation, joint_lm, translation

PROSE = "the lady was very civil and her sister said that it was a fine day for a walk".split()
VERSE = "THOU ART MY LORD O KING WHAT SAY'ST THOU TO THIS NIGHT OF WOE".split()


def _text(words: list[str], n_words: int, seed: int, line: int) -> str:
    rng = random.Random(seed)
    out = [rng.choice(words) for _ in range(n_words)]
    return "\n".join(" ".join(out[i : i + line]) for i in range(0, n_words, line))


def _fake_austen(root: object = None) -> dict[str, str]:
    return {f"Novel {i}": _text(PROSE, 4000, i, 12) for i in range(2)}


def _fake_shakespeare(root: object = None) -> dict[str, str]:
    return {name: _text(VERSE, 1500, len(name), 6) for name in ("hamlet", "macbeth", "lear")}


def _fake_bible(root: object = None, drop_misaligned: bool = True) -> list[Verse]:
    to_es = {
        "the": "el",
        "lady": "dama",
        "was": "era",
        "king": "rey",
        "lord": "senor",
        "thou": "tu",
    }
    verses = []
    for i in range(240):
        book = "Gen" if i < 160 else "Ps"
        words = PROSE if book == "Gen" else [w.lower() for w in VERSE]
        rng = random.Random(i)
        en = f"{i} " + " ".join(rng.choice(words) for _ in range(8))
        es = " ".join(to_es.get(w, w[::-1]) for w in en.split())
        verses.append(Verse(book, 1 + i // 30, 1 + i % 30, en, es))
    return verses


@pytest.fixture(autouse=True)
def fake_data(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(datasets, "load_austen", _fake_austen)
    monkeypatch.setattr(datasets, "load_shakespeare", _fake_shakespeare)
    monkeypatch.setattr(datasets, "load_bible_parallel", _fake_bible)
    monkeypatch.setattr(cli, "missing_datasets", lambda experiments: {})  # fakes stand in
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster and fair to a shared machine
    yield
    torch.set_num_threads(threads)


# --- models ---------------------------------------------------------------------------------


def test_causal_lm_shape_and_causal_mask() -> None:
    torch.manual_seed(0)
    lm = CausalLM(d_model=32, n_layers=2, n_heads=4, max_len=16).eval()
    x = torch.randint(0, 256, (3, 16))
    logits = lm(x)
    assert logits.shape == (3, 16, 256)
    for t in (0, 7, 14):
        changed = x.clone()
        changed[:, t + 1 :] = torch.randint(0, 256, (3, 15 - t))
        out = lm(changed)
        torch.testing.assert_close(out[:, : t + 1], logits[:, : t + 1])
        assert not torch.allclose(out[:, t + 1 :], logits[:, t + 1 :])


def test_causal_lm_rejects_long_input_and_bad_heads() -> None:
    lm = CausalLM(d_model=16, n_layers=1, n_heads=2, max_len=8)
    with pytest.raises(ValueError, match="max_len=8"):
        lm(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="multiple of n_heads"):
        CausalLM(d_model=10, n_layers=1, n_heads=4, max_len=8)


def _seq2seq() -> Seq2Seq:
    torch.manual_seed(0)
    return Seq2Seq(
        vocab_size=259,
        d_model=32,
        n_enc_layers=1,
        n_dec_layers=2,
        n_heads=4,
        max_len=20,
        pad_id=PAD,
    ).eval()


def test_seq2seq_decoder_is_causal_and_reads_the_source() -> None:
    m = _seq2seq()
    src, tgt = torch.randint(0, 256, (2, 12)), torch.randint(0, 256, (2, 10))
    logits = m(src, tgt)
    assert logits.shape == (2, 10, 259)
    changed = tgt.clone()
    changed[:, 5:] = torch.randint(0, 256, (2, 5))
    out = m(src, changed)
    torch.testing.assert_close(out[:, :5], logits[:, :5])
    other_src = torch.randint(0, 256, (2, 12))
    assert not torch.allclose(m(other_src, tgt)[:, 0], logits[:, 0])


def test_seq2seq_ignores_source_padding_and_pad_targets() -> None:
    m = _seq2seq()
    src, tgt = torch.randint(0, 256, (2, 8)), torch.randint(0, 256, (2, 6))
    padded = torch.cat([src, torch.full((2, 5), PAD)], dim=1)
    torch.testing.assert_close(m(padded, tgt), m(src, tgt))
    tgt_out = torch.randint(0, 256, (2, 6))
    tgt_out[1, 3:] = PAD
    logits = m(src, tgt)
    keep = tgt_out != PAD
    expected = torch.nn.functional.cross_entropy(logits[keep], tgt_out[keep])
    torch.testing.assert_close(m.loss(src, tgt, tgt_out), expected)


def test_count_parameters() -> None:
    lm = CausalLM(d_model=16, n_layers=1, n_heads=2, max_len=8)
    assert count_parameters(lm) == sum(p.numel() for p in lm.parameters())


# --- batching -------------------------------------------------------------------------------


def test_window_sampler_draws_contiguous_shifted_windows_reproducibly() -> None:
    data = torch.arange(1000)
    s1 = WindowSampler(data, batch_size=64, seq_len=10, generator=torch.Generator().manual_seed(3))
    s2 = WindowSampler(data, batch_size=64, seq_len=10, generator=torch.Generator().manual_seed(3))
    x, y = s1.sample()
    assert x.shape == y.shape == (64, 10) and x.dtype == torch.long
    torch.testing.assert_close(y, x + 1)  # next-element targets
    torch.testing.assert_close(x, x[:, :1] + torch.arange(10))  # contiguous
    assert int(x.min()) >= 0 and int(y.max()) <= 999
    torch.testing.assert_close(s2.sample()[0], x)
    starts = torch.cat([s1.sample()[0][:, 0] for _ in range(50)])
    assert int(starts.max()) > 900 and int(starts.min()) < 100  # covers the corpus
    assert len(starts.unique()) > 500  # random, not a few repeated windows


def test_window_sampler_and_eval_windows_validate() -> None:
    with pytest.raises(ValueError, match="seq_len=10"):
        WindowSampler(torch.arange(10), batch_size=2, seq_len=10, generator=torch.Generator())
    with pytest.raises(ValueError, match="batch_size=0"):
        WindowSampler(torch.arange(100), batch_size=0, seq_len=10, generator=torch.Generator())
    with pytest.raises(ValueError, match="n_windows=0"):
        eval_windows(torch.arange(100), n_windows=0, seq_len=4, batch_size=2)


def test_eval_windows_fixed_and_span_the_corpus() -> None:
    data = torch.arange(500)
    batches = eval_windows(data, n_windows=10, seq_len=8, batch_size=4)
    assert [x.shape[0] for x, _ in batches] == [4, 4, 2]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert int(x[0, 0]) == 0 and int(y[-1, -1]) == 499
    torch.testing.assert_close(y, x + 1)
    again = eval_windows(data, n_windows=10, seq_len=8, batch_size=4)
    torch.testing.assert_close(torch.cat([b[0] for b in again]), x)


def test_encode_holdout_and_windows_at() -> None:
    data = encode("héllo wörld")
    assert data.dtype == torch.uint8 and bytes(data.tolist()).decode() == "héllo wörld"
    train, held = holdout_split(data, 0.25)
    assert len(held) == 3 and torch.equal(torch.cat([train, held]), data)
    with pytest.raises(ValueError, match=r"eval_fraction=1\.0"):
        holdout_split(data, 1.0)
    x, y = windows_at(torch.arange(20), torch.tensor([3]), 4)
    assert x.tolist() == [[3, 4, 5, 6]] and y.tolist() == [[4, 5, 6, 7]]


def test_encode_pairs_truncates_and_marks() -> None:
    src, tin, tout = encode_pairs([("abcdef", "xy"), ("a", "ñ")], max_len=4)
    assert src.tolist() == [[97, 98, 99, EOS], [97, EOS, PAD, PAD]]
    assert tin.tolist() == [[BOS, 120, 121], [BOS, 195, 177]]
    assert tout.tolist() == [[120, 121, EOS], [195, 177, EOS]]
    with pytest.raises(ValueError, match="max_len=1"):
        encode_pairs([("a", "b")], max_len=1)


def test_pair_sampler_and_pair_batches_trim_padding() -> None:
    enc = encode_pairs([("ab", "c"), ("abcdefgh", "cdefgh")], max_len=16)
    short = PairSampler(
        (enc[0][:1], enc[1][:1], enc[2][:1]),
        batch_size=4,
        generator=torch.Generator().manual_seed(0),
    ).sample()
    assert [t.shape for t in short] == [(4, 3), (4, 2), (4, 2)]  # trailing padding dropped
    batches = pair_batches(enc, 1)
    assert [b[0].shape[1] for b in batches] == [3, 9]
    for _, tin, tout in batches:
        torch.testing.assert_close(tin[:, 1:], tout[:, :-1])


# --- experiments ----------------------------------------------------------------------------


def _check_record(record: dict[str, Any], kind: str = "sweep") -> None:
    validate_record(
        complete_record(RunSpec(**record["spec"]), record, 1.0), require_losses=kind == "sweep"
    )
    traj = record["trajectory"]
    for key in LOSS_KEYS:
        assert all(math.isfinite(v) for v in traj[key])
        assert abs(traj[key][0] - math.log(256)) < 0.3  # a fresh model is near uniform
    for key in ("train_main", "eval_main"):
        assert traj[key][-1] < traj[key][0] - 0.2, key  # learns the main task


@pytest.mark.parametrize("module", [joint_lm, translation])
def test_sweep_experiments_learn_and_lam0_is_method_independent(module: ModuleType) -> None:
    runs = {
        m: module.run(RunSpec(module.__name__.split(".")[-1], m, 0.0, 0.01, 0, "smoke"))
        for m in ("bloop", "mixed")
    }
    for record in runs.values():
        _check_record(record)
        assert record["config"]["parameters"] > 0
    # lam = 0: every method is plain training on the main loss, with the same batches.
    for key in LOSS_KEYS:
        assert runs["bloop"]["final"][key] == pytest.approx(runs["mixed"]["final"][key], rel=1e-5)


def test_joint_lm_methods_differ_at_large_lam_and_aux_is_another_domain() -> None:
    plain = joint_lm.run(RunSpec("joint_lm", "mixed", 0.0, 0.01, 0, "smoke"))
    bloop = joint_lm.run(RunSpec("joint_lm", "bloop", 10.0, 0.01, 0, "smoke"))
    mixed = joint_lm.run(RunSpec("joint_lm", "mixed", 10.0, 0.01, 0, "smoke"))
    assert bloop["final"]["train_aux"] != mixed["final"]["train_aux"]
    for record in (bloop, mixed):  # a large lam trains the aux domain
        assert record["final"]["eval_aux"] < plain["final"]["eval_aux"] - 0.1
    corpora = joint_lm.load_corpora()
    main_bytes = set(corpora["train_main"].tolist())
    assert set(corpora["train_aux"].tolist()) - main_bytes  # upper-case verse vs prose
    assert corpora["eval_main"].numel() > 0 and corpora["eval_aux"].numel() > 0


def test_translation_split_is_disjoint() -> None:
    parts = translation.split_verses(20)
    assert len(parts["eval_main"]) == len(parts["eval_aux"]) == 20
    assert set(parts["eval_main"]).isdisjoint(parts["train_main"])
    assert set(parts["eval_aux"]).isdisjoint(parts["train_aux"])
    assert len(parts["train_aux"]) == 60  # all remaining poetry verses (fewer than 1000)


def test_mixed_loss_envelope_is_lower_envelope() -> None:
    recs = [
        {
            "spec": {"method": "bloop", "rho": 0.01, "lam": lam},
            "final": {"eval_main": a, "eval_aux": b},
        }
        for lam, a, b in ((0.0, 1.0, 4.0), (1.0, 2.0, 2.0), (10.0, 4.0, 1.0))
    ]
    env = joint_lm.mixed_loss_envelopes(recs, [0.0, 0.5, 1.0])
    assert env == {"Bloop": [1.0, 2.0, 1.0]}


def test_cli_smoke_sweep_and_report(tmp_path: Path) -> None:
    """`torchbloop run ema_ablation --budget smoke` end to end (in-process), then the report."""
    out = tmp_path / "res"
    assert (
        cli.main(
            [
                "run",
                "ema_ablation",
                "--budget",
                "smoke",
                "--methods",
                "bloop",
                "--rho",
                "0.001",
                "0.9",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    records = read_records(out, "ema_ablation")
    assert sorted((r["spec"]["method"], r["spec"]["rho"]) for r in records) == [
        ("bloop", 0.001),
        ("bloop", 0.9),
    ]
    assert all(r["spec"]["lam"] == ema_ablation.LAM for r in records)
    steps = 3 * joint_lm.LM_CONFIGS["smoke"].steps
    assert all(r["trajectory"]["step"][-1] == steps for r in records)
    for r in records:
        _check_record(r)
    assert cli.main(["report", str(out)]) == 0
    for png in ("pareto.png", "ema_curves.png"):
        assert (out / "ema_ablation" / png).stat().st_size > 1000
    figs = joint_lm.mixed_loss_plot(records, tmp_path)
    assert figs[0].stat().st_size > 1000


def test_registered_experiments() -> None:
    for name in ("joint_lm", "translation", "ema_ablation"):
        exp = get(name)
        assert (exp.kind == "sweep" and 0.0 in exp.lams_for("default")) or name == "ema_ablation"
        assert len(exp.lams_for("paper")) >= len(exp.lams_for("default"))
    assert get("ema_ablation").rhos == (0.001, 0.01, 0.1, 0.9)
    assert len(get("joint_lm").lams_for("paper")) == 17  # 16 values + 0, as in the paper


def test_mixed_loss_envelope_is_the_mean_of_the_per_seed_envelopes() -> None:
    def rec(seed: int, main: float, aux: float) -> dict[str, Any]:
        spec = {"method": "bloop", "rho": 0.01, "lam": 0.1, "seed": seed}
        return {"spec": spec, "final": {"eval_main": main, "eval_aux": aux}}

    # Seed 0 reaches main 1.0, seed 1 only 2.0: at t = 0 the pooled minimum would say 1.0.
    records = [rec(0, 1.0, 5.0), rec(0, 3.0, 1.0), rec(1, 2.0, 4.0), rec(1, 4.0, 2.0)]
    by_seed = joint_lm.mixed_loss_envelopes_by_seed(records, [0.0, 1.0])
    assert by_seed == {"Bloop": {0: [1.0, 1.0], 1: [2.0, 2.0]}}
    assert joint_lm.mixed_loss_envelopes(records, [0.0, 1.0]) == {"Bloop": [1.5, 1.5]}
