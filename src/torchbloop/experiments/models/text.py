"""Small byte-level transformers for the text experiments (joint LM, translation, EMA ablation).

Both models are pre-LayerNorm transformers with learned positional embeddings, no dropout
(runs are short and every method must see the same model) and
:func:`torch.nn.functional.scaled_dot_product_attention` for attention.

* :class:`CausalLM`: decoder-only language model; ``logits[:, t]`` depends on ``tokens[:, :t+1]``
  only.
* :class:`Seq2Seq`: encoder-decoder; the encoder sees the whole (padded) source, the decoder sees
  the source through cross-attention and the target causally.

Example:
    >>> lm = CausalLM(vocab_size=256, d_model=32, n_layers=1, n_heads=2, max_len=16)
    >>> lm(torch.zeros(3, 16, dtype=torch.long)).shape
    torch.Size([3, 16, 256])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CausalLM", "Seq2Seq", "count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars of ``model``.

    Example:
        >>> count_parameters(nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _check_dims(d_model: int, n_heads: int) -> None:
    if d_model % n_heads:
        raise ValueError(
            f"Invalid d_model={d_model}, n_heads={n_heads}: d_model must be a multiple of n_heads"
        )


class _Attention(nn.Module):
    """Multi-head attention of ``x`` (queries) over ``memory`` (keys/values; ``x`` if None)."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def _heads(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        *,
        causal: bool = False,
        key_mask: Tensor | None = None,
    ) -> Tensor:
        """``key_mask``: bool ``[B, S]``, True where a key may be attended to."""
        src = x if memory is None else memory
        k, v = self.kv(src).chunk(2, dim=-1)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(
            self._heads(self.q(x)), self._heads(k), self._heads(v), attn_mask=mask, is_causal=causal
        )
        b, h, t, dh = y.shape
        out: Tensor = self.out(y.transpose(1, 2).reshape(b, t, h * dh))
        return out


class _Block(nn.Module):
    """Pre-LN block: self-attention, optional cross-attention, MLP (4x, GELU)."""

    def __init__(self, d_model: int, n_heads: int, *, cross: bool = False) -> None:
        super().__init__()
        self.ln_self = nn.LayerNorm(d_model)
        self.self_attn = _Attention(d_model, n_heads)
        self.ln_cross = nn.LayerNorm(d_model) if cross else None
        self.cross_attn = _Attention(d_model, n_heads) if cross else None
        self.ln_mlp = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(
        self,
        x: Tensor,
        *,
        causal: bool,
        self_mask: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
    ) -> Tensor:
        x = x + self.self_attn(self.ln_self(x), causal=causal, key_mask=self_mask)
        if self.cross_attn is not None and self.ln_cross is not None:
            x = x + self.cross_attn(self.ln_cross(x), memory, key_mask=memory_mask)
        y: Tensor = x + self.mlp(self.ln_mlp(x))
        return y


class _Embedding(nn.Module):
    """Token + learned position embedding."""

    def __init__(self, vocab_size: int, d_model: int, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)

    def forward(self, tokens: Tensor) -> Tensor:
        t = tokens.shape[1]
        if t > self.max_len:
            raise ValueError(
                f"Invalid sequence length={t}: must be <= max_len={self.max_len}; "
                "build the model with a larger max_len"
            )
        x: Tensor = self.tok(tokens) + self.pos(torch.arange(t, device=tokens.device))
        return x


def _init_weights(module: nn.Module) -> None:
    """GPT-style init: normal(0, 0.02) weights, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)


class CausalLM(nn.Module):
    """Decoder-only byte-level transformer language model.

    Args:
        vocab_size: number of token ids (256 for raw bytes).
        d_model: width.
        n_layers: number of blocks.
        n_heads: attention heads (must divide ``d_model``).
        max_len: longest input sequence.

    Example:
        >>> lm = CausalLM(vocab_size=256, d_model=32, n_layers=1, n_heads=2, max_len=8)
        >>> x = torch.randint(0, 256, (2, 8))
        >>> lm.loss(x[:, :-1], x[:, 1:]).shape
        torch.Size([])
    """

    def __init__(
        self, *, vocab_size: int = 256, d_model: int, n_layers: int, n_heads: int, max_len: int
    ) -> None:
        super().__init__()
        _check_dims(d_model, n_heads)
        self.embed = _Embedding(vocab_size, d_model, max_len)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        _init_weights(self)

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits ``[B, T, vocab]`` for token ids ``[B, T]``."""
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, causal=True)
        logits: Tensor = self.head(self.ln_f(x))
        return logits

    def loss(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """Mean next-token cross-entropy in nats per token."""
        logits = self(inputs)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


class Seq2Seq(nn.Module):
    """Encoder-decoder transformer over a shared vocabulary (bytes + specials).

    Args:
        vocab_size: number of token ids (source and target share the embedding table).
        d_model: width.
        n_enc_layers: encoder blocks.
        n_dec_layers: decoder blocks (self-attention, cross-attention, MLP).
        n_heads: attention heads.
        max_len: longest source or target sequence.
        pad_id: padding id: masked out of attention keys and ignored by :meth:`loss`.

    Example:
        >>> m = Seq2Seq(vocab_size=260, d_model=32, n_enc_layers=1, n_dec_layers=1,
        ...             n_heads=2, max_len=10, pad_id=259)
        >>> src = torch.randint(0, 256, (2, 10))
        >>> tgt = torch.randint(0, 256, (2, 7))
        >>> m(src, tgt).shape
        torch.Size([2, 7, 260])
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        d_model: int,
        n_enc_layers: int,
        n_dec_layers: int,
        n_heads: int,
        max_len: int,
        pad_id: int,
    ) -> None:
        super().__init__()
        _check_dims(d_model, n_heads)
        if not 0 <= pad_id < vocab_size:
            raise ValueError(f"Invalid pad_id={pad_id}: must be in [0, vocab_size={vocab_size})")
        self.pad_id = pad_id
        self.embed = _Embedding(vocab_size, d_model, max_len)
        self.encoder = nn.ModuleList(_Block(d_model, n_heads) for _ in range(n_enc_layers))
        self.ln_enc = nn.LayerNorm(d_model)
        self.decoder = nn.ModuleList(
            _Block(d_model, n_heads, cross=True) for _ in range(n_dec_layers)
        )
        self.ln_dec = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        _init_weights(self)

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder states ``[B, S, d]`` and the source key mask ``[B, S]`` (True = token)."""
        mask = src != self.pad_id
        x = self.embed(src)
        for block in self.encoder:
            x = block(x, causal=False, self_mask=mask)
        return self.ln_enc(x), mask

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Logits ``[B, T, vocab]`` of the next target token at each position of ``tgt_in``."""
        memory, mask = self.encode(src)
        x = self.embed(tgt_in)
        for block in self.decoder:
            x = block(x, causal=True, memory=memory, memory_mask=mask)
        logits: Tensor = self.head(self.ln_dec(x))
        return logits

    def loss(self, src: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> Tensor:
        """Mean cross-entropy (nats per target token) over non-padding targets."""
        logits = self(src, tgt_in)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1), ignore_index=self.pad_id
        )
