"""Tiny transformers models of every GeGLU family, built from configs (offline, CPU), and a
GemmaMLP-shaped module without transformers for the layer tests.

Each entry: name -> (builder() -> model, inputs(model) -> kwargs for forward, output getter).
"""

import importlib

import torch
import torch.nn as nn


class GatedGeluMLP(nn.Module):
    """down_proj(gelu(gate_proj(x)) * up_proj(x)), GemmaMLP's attributes and math."""

    def __init__(self, hidden=48, inter=136, approximate="tanh", bias=False):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=bias)
        self.up_proj = nn.Linear(hidden, inter, bias=bias)
        self.down_proj = nn.Linear(inter, hidden, bias=bias)
        self.act_fn = nn.GELU(approximate=approximate)

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))

VOCAB = 128
SEQ = 7


def _tm(module, *names):
    mod = importlib.import_module(f"transformers.models.{module}")
    return [getattr(mod, n) for n in names]


def _ids(batch=2, seq=SEQ):
    return torch.randint(0, VOCAB, (batch, seq))


DECODER = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
               eos_token_id=2)


def causal_lm(module, config_name, model_name, **overrides):
    def build():
        config_cls, model_cls = _tm(module, config_name, model_name)
        return model_cls(config_cls(**{**DECODER, **overrides}))
    return build, lambda m: dict(input_ids=_ids()), lambda out: out.logits


def t5_like(module, config_name, model_name, **overrides):
    def build():
        config_cls, model_cls = _tm(module, config_name, model_name)
        kwargs = dict(vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=96, num_layers=2, num_decoder_layers=2,
                      num_heads=4, feed_forward_proj="gated-gelu", dropout_rate=0.1, pad_token_id=0,
                      decoder_start_token_id=0, eos_token_id=1)
        return model_cls(config_cls(**{**kwargs, **overrides}))
    return build, lambda m: dict(input_ids=_ids(), decoder_input_ids=_ids(seq=5)), lambda out: out.logits


def _t5gemma(module, config_name, model_name):
    def build():
        config_cls, model_cls = _tm(module, config_name, model_name)
        sub = {k: v for k, v in DECODER.items() if k not in ("pad_token_id", "bos_token_id", "eos_token_id")}
        cfg = config_cls(encoder=dict(sub, dropout_rate=0.1), decoder=dict(sub, dropout_rate=0.1), vocab_size=VOCAB,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2, dropout_rate=0.1)
        return model_cls(cfg)
    return build, lambda m: dict(input_ids=_ids(), decoder_input_ids=_ids(seq=5)), lambda out: out.logits


def _t5gemma2():
    def build():
        config_cls, model_cls = _tm("t5gemma2", "T5Gemma2Config", "T5Gemma2ForConditionalGeneration")
        sub = {k: v for k, v in DECODER.items() if k not in ("pad_token_id", "bos_token_id", "eos_token_id")}
        vision = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, image_size=16, patch_size=8)
        cfg = config_cls(encoder=dict(text_config=sub, vision_config=vision, mm_tokens_per_image=4), decoder=sub,
                         vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2, dropout_rate=0.1,
                         image_token_index=VOCAB - 1, eoi_token_index=VOCAB - 2, boi_token_index=VOCAB - 3)
        return model_cls(cfg)
    return build, lambda m: dict(input_ids=_ids(), decoder_input_ids=_ids(seq=5)), lambda out: out.logits


def _embedding_gemma2():
    def build():
        config_cls, model_cls = _tm("embedding_gemma2", "EmbeddingGemma2Config", "EmbeddingGemma2Model")
        text = {k: v for k, v in DECODER.items() if k not in ("bos_token_id", "eos_token_id")}
        return model_cls(config_cls(text_config=text))
    return build, lambda m: dict(input_ids=_ids()), lambda out: out.last_hidden_state


def _modernbert():
    def build():
        config_cls, model_cls = _tm("modernbert", "ModernBertConfig", "ModernBertForMaskedLM")
        return model_cls(config_cls(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                    num_attention_heads=4, mlp_dropout=0.1, pad_token_id=0, bos_token_id=1,
                                    eos_token_id=2, cls_token_id=1, sep_token_id=2, global_attn_every_n_layers=2,
                                    local_attention=8, attn_implementation="eager"))
    return build, lambda m: dict(input_ids=_ids()), lambda out: out.logits


def _gte():
    def build():
        config_cls, model_cls = _tm("gte", "GteConfig", "GteModel")
        return model_cls(config_cls(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                    num_attention_heads=4, hidden_act="gelu", hidden_dropout_prob=0.1, pad_token_id=0))
    return build, lambda m: dict(input_ids=_ids()), lambda out: out.last_hidden_state


def _pixtral():
    def build():
        config_cls, model_cls = _tm("pixtral", "PixtralVisionConfig", "PixtralVisionModel")
        return model_cls(config_cls(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                                    head_dim=16, image_size=32, patch_size=8, num_channels=3, hidden_act="gelu"))
    return (build, lambda m: dict(pixel_values=torch.randn(1, 3, 32, 32), image_sizes=torch.tensor([[32, 32]])),
            lambda out: out.last_hidden_state)


def _clvp():
    def build():
        config_cls, model_cls = _tm("clvp", "ClvpEncoderConfig", "ClvpEncoder")
        return model_cls(config_cls(vocab_size=VOCAB, hidden_size=128, intermediate_size=96, projection_dim=128,
                                    num_hidden_layers=2, num_attention_heads=4, hidden_act="gelu", dropout=0.0))
    return build, lambda m: dict(input_ids=_ids()), lambda out: out.last_hidden_state


def _pix2struct():
    def build():
        config_cls, model_cls = _tm("pix2struct", "Pix2StructTextConfig", "Pix2StructTextModel")
        return model_cls(config_cls(vocab_size=VOCAB, hidden_size=64, d_kv=16, d_ff=96, num_layers=2, num_heads=4,
                                    dense_act_fn="gelu_new", dropout_rate=0.1, pad_token_id=0, initializer_range=0.02,
                                    decoder_start_token_id=0, eos_token_id=1))
    return build, lambda m: dict(input_ids=_ids()), lambda out: out.logits


FAMILIES = {
    "gemma": causal_lm("gemma", "GemmaConfig", "GemmaForCausalLM", hidden_activation="gelu_pytorch_tanh"),
    "gemma2": causal_lm("gemma2", "Gemma2Config", "Gemma2ForCausalLM", hidden_activation="gelu_pytorch_tanh"),
    "gemma3": causal_lm("gemma3", "Gemma3TextConfig", "Gemma3ForCausalLM", hidden_activation="gelu_pytorch_tanh"),
    "vaultgemma": causal_lm("vaultgemma", "VaultGemmaConfig", "VaultGemmaForCausalLM"),
    "recurrent_gemma": causal_lm("recurrent_gemma", "RecurrentGemmaConfig", "RecurrentGemmaForCausalLM",
                                 num_key_value_heads=1, lru_width=64, attention_window_size=16,
                                 block_types=["recurrent", "attention"]),
    "zamba": causal_lm("zamba", "ZambaConfig", "ZambaForCausalLM", hidden_act="gelu", num_hidden_layers=6,
                       attn_layer_period=3, attn_layer_offset=2, num_key_value_heads=4, mamba_d_state=8, mamba_dt_rank=8, n_mamba_heads=1,
                       attention_head_dim=32,),
    "gemma3n": causal_lm("gemma3n", "Gemma3nTextConfig", "Gemma3nForCausalLM", hidden_activation="gelu_pytorch_tanh",
                         intermediate_size=[96, 96], activation_sparsity_pattern=[0.95, 0.0],
                         layer_types=["sliding_attention", "full_attention"], num_kv_shared_layers=0,
                         laurel_rank=8, altup_num_inputs=2, hidden_size_per_layer_input=16,
                         vocab_size_per_layer_input=VOCAB, sliding_window=8),
    "gemma4": causal_lm("gemma4", "Gemma4TextConfig", "Gemma4ForCausalLM"),
    "embedding_gemma2": _embedding_gemma2(),
    "t5gemma2": _t5gemma2(),
    "gte": _gte(),
    "pixtral": _pixtral(),
    "t5gemma": _t5gemma("t5gemma", "T5GemmaConfig", "T5GemmaForConditionalGeneration"),
    "t5_v1_1": t5_like("t5", "T5Config", "T5ForConditionalGeneration"),
    "mt5": t5_like("mt5", "MT5Config", "MT5ForConditionalGeneration"),
    "umt5": t5_like("umt5", "UMT5Config", "UMT5ForConditionalGeneration"),
    "longt5": t5_like("longt5", "LongT5Config", "LongT5ForConditionalGeneration"),
    "pix2struct": _pix2struct(),
    "modernbert": _modernbert(),
    "clvp": _clvp(),
}
