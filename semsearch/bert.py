"""A lean BERT encoder in torch, for inference: the same arithmetic as transformers' BertModel.

The default inference path is onnxruntime (:mod:`semsearch.onnx_backend`), which computes in fp32 only. This
module is the torch inference path (``backend="torch"``) and the fast bf16 one: its matrices can be stored in
bfloat16 (:meth:`LeanBert.cast_matmul_weights`), about 1.7x the fp32 speed on CPUs with native bf16, which
transformers under autocast does not reach (it casts the weights on every call). BERT's encoder is small
enough to write down: embeddings, then per layer self-attention and a feed-forward block, each followed by
a residual LayerNorm. Weights come straight from the safetensors file; the tokenizer is
:class:`semsearch.tokenizer.FastTokenizer`. The vectors equal transformers' to float rounding (tested against
sentence-transformers to 1e-5); models other than BERT use transformers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .errors import InferenceOnly

SUPPORTED = {"bert"}


def supports(folder: Path) -> bool:
    """Whether ``folder`` holds a BERT this module can run (plain post-LayerNorm BERT, GELU, safetensors)."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (config.get("model_type") in SUPPORTED and config.get("hidden_act", "gelu") == "gelu"
            and config.get("position_embedding_type", "absolute") == "absolute"
            and (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file())


class LeanBert:
    """``forward(input_ids, attention_mask, token_type_ids) -> token embeddings``, inference only."""

    def __init__(self, folder: Path) -> None:
        import torch
        from safetensors.torch import load_file

        config = json.loads((folder / "config.json").read_text())
        self.config = config
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        weights = {}
        for name, tensor in load_file(str(folder / "model.safetensors")).items():
            name = name.removeprefix("bert.").replace("LayerNorm.gamma", "LayerNorm.weight").replace(
                "LayerNorm.beta", "LayerNorm.bias")
            weights[name] = tensor.float()
        self.weights = weights
        self.layers = int(config["num_hidden_layers"])
        self.training = False
        self._torch = torch

    # a small part of the torch.nn.Module surface, so the Encoder can treat both backends alike
    def to(self, device) -> "LeanBert":
        self.weights = {k: v.to(device) for k, v in self.weights.items()}
        return self

    def cast_matmul_weights(self, dtype) -> "LeanBert":
        """Store the encoder layers' matrices and biases in ``dtype`` (run under autocast to that dtype).

        Embeddings and LayerNorm parameters stay float32, as autocast computes LayerNorm in float32.
        """
        self.weights = {k: v.to(dtype) if k.startswith("encoder.") and "LayerNorm" not in k else v
                        for k, v in self.weights.items()}
        return self

    def eval(self) -> "LeanBert":
        return self

    def train(self, mode: bool = True) -> "LeanBert":
        if mode:
            raise InferenceOnly("LeanBert is for inference; load the encoder with backend='transformers' to train")
        return self

    def __call__(self, input_ids, attention_mask, token_type_ids=None):
        return (self.forward(input_ids, attention_mask, token_type_ids),)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        torch = self._torch
        F = torch.nn.functional
        w = self.weights
        batch, length = input_ids.shape
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        positions = torch.arange(length, device=input_ids.device)
        x = (F.embedding(input_ids, w["embeddings.word_embeddings.weight"])
             + F.embedding(token_type_ids, w["embeddings.token_type_embeddings.weight"])
             + F.embedding(positions, w["embeddings.position_embeddings.weight"]).unsqueeze(0))
        hidden = x.shape[-1]
        x = F.layer_norm(x, (hidden,), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        # Additive mask as transformers builds it: 0 where attended, the dtype's minimum where padded.
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        head_dim = hidden // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q = F.linear(x, w[p + "attention.self.query.weight"], w[p + "attention.self.query.bias"])
            k = F.linear(x, w[p + "attention.self.key.weight"], w[p + "attention.self.key.bias"])
            v = F.linear(x, w[p + "attention.self.value.weight"], w[p + "attention.self.value.bias"])
            q, k, v = (t.view(batch, length, self.heads, head_dim).transpose(1, 2) for t in (q, k, v))
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0 / math.sqrt(head_dim))
            context = context.transpose(1, 2).reshape(batch, length, hidden)
            attended = F.linear(context, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"])
            x = F.layer_norm(attended + x, (hidden,), w[p + "attention.output.LayerNorm.weight"],
                             w[p + "attention.output.LayerNorm.bias"], self.eps)
            inner = F.gelu(F.linear(x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"]))
            out = F.linear(inner, w[p + "output.dense.weight"], w[p + "output.dense.bias"])
            x = F.layer_norm(out + x, (hidden,), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"],
                             self.eps)
        return x
