"""Tiny random-init models of every supported family, built from config: for tests, benchmarks and the offline demo."""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig

_COMMON = {"bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2}


def tiny_config(model_type: str, vocab_size: int = 128, d: int = 32, layers: int = 2, heads: int = 4,
                ffn: int = 64, max_positions: int = 256, **overrides: object) -> PretrainedConfig:
    """A config of `model_type`: d_model `d`, `layers` layers per stack, `heads` heads (GQA 2:1 where supported)."""
    if model_type in ("bart", "mbart"):
        kw = dict(d_model=d, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads,
                  decoder_attention_heads=heads, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn,
                  max_position_embeddings=max_positions, decoder_start_token_id=2, forced_eos_token_id=2)
    elif model_type in ("bert", "roberta"):
        kw = dict(hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn,
                  max_position_embeddings=max_positions + 2)
    elif model_type == "gpt2":
        kw = dict(n_embd=d, n_layer=layers, n_head=heads, n_inner=ffn, n_positions=max_positions)
    elif model_type in ("llama", "mistral", "qwen2"):
        kw = dict(hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
                  intermediate_size=ffn, max_position_embeddings=max_positions)
    else:
        raise ValueError(f"no tiny config for model type {model_type!r}; expected one of {sorted(TINY_TYPES)}")
    kw.update(_COMMON, vocab_size=vocab_size)
    kw.update(overrides)
    return AutoConfig.for_model(model_type, **kw)


TINY_TYPES = ("bart", "bert", "gpt2", "llama", "mbart", "mistral", "qwen2", "roberta")
