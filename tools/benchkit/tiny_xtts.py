"""A tiny XTTS v2 with random weights, in the layout the published weights use (built once per test
session, and by ``tools.engine_bench`` when the published weights are not there).

The architecture and config are XTTS v2's own (``XttsConfig`` with the published model
arguments), with the GPT shrunk to 2 layers of width 64 and its generation bounded to a few
dozen audio tokens so random weights cannot talk forever. The vocoder and speaker encoder have
fixed sizes in coqui's code (22 M parameters); to keep ``model.pth`` small their random tensors
are stored in float16 and every tensor of one shape and role shares one random draw, which
``torch.save`` writes once. ``load_state_dict`` copies them into separate float32 parameters,
so the backend loads the file through its real code unchanged. The stop token's logit is
pushed down so every sentence runs to the bound. The tokenizer is a byte-pair
``tokenizers`` model trained here on a few sentences, with XTTS's special and language tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engines.xtts_engine import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    SPEAKERS_FILE,
    VOCAB_FILE,
    XTTS_DIR,
)

from .reference_audio import REFERENCE_RATE_HZ, voiced_signal

BUILT_IN_SPEAKERS = ("Claribel Dervla", "Andrew Chipper", "Ana Florence")
"""Speakers of voices.yaml (en-US Sarah and David, es-MX Sofía); the others are absent."""
SEED = 1234
TINY_GPT_LAYERS = 2
TINY_GPT_CHANNELS = 64
TINY_GPT_HEADS = 2
TINY_MAX_AUDIO_TOKENS = 32
"""The GPT generates at most this minus 3 tokens (~1.35 s of audio) per sentence."""
GENERATED_TOKENS_PER_SENTENCE = TINY_MAX_AUDIO_TOKENS - 3
"""Every sentence runs to the bound: the stop token's logit is pushed down (see below)."""
STOP_TOKEN_LOGIT_BIAS = -1e4
SPEAKER_REFERENCE_S = 4.0
TOKENIZER_VOCAB_SIZE = 400

PUBLISHED_MODEL_ARGS: dict[str, Any] = {
    # XTTS v2's config.json as coqui/XTTS-v2 publishes it
    "gpt_batch_size": 1,
    "enable_redaction": False,
    "kv_cache": True,
    "num_chars": 255,
    "tokenizer_file": "",
    "gpt_max_audio_tokens": 605,
    "gpt_max_text_tokens": 402,
    "gpt_max_prompt_tokens": 70,
    "gpt_layers": 30,
    "gpt_n_model_channels": 1024,
    "gpt_n_heads": 16,
    "gpt_number_text_tokens": 6681,
    "gpt_num_audio_tokens": 1026,
    "gpt_start_audio_token": 1024,
    "gpt_stop_audio_token": 1025,
    "gpt_code_stride_len": 1024,
    "gpt_use_masking_gt_prompt_approach": True,
    "gpt_use_perceiver_resampler": True,
    "input_sample_rate": 22050,
    "output_sample_rate": 24000,
    "output_hop_length": 256,
    "decoder_input_dim": 1024,
    "d_vector_dim": 512,
    "cond_d_vector_in_each_upsampling_layer": True,
    "duration_const": 102400,
}
PUBLISHED_INFERENCE: dict[str, Any] = {
    "temperature": 0.75,
    "length_penalty": 1.0,
    "repetition_penalty": 5.0,
    "top_k": 50,
    "top_p": 0.85,
    "num_gpt_outputs": 1,
    "gpt_cond_len": 30,
    "gpt_cond_chunk_len": 4,
    "max_ref_len": 30,
    "sound_norm_refs": False,
}
TINY_OVERRIDES: dict[str, Any] = {
    "gpt_layers": TINY_GPT_LAYERS,
    "gpt_n_model_channels": TINY_GPT_CHANNELS,
    "gpt_n_heads": TINY_GPT_HEADS,
    "decoder_input_dim": TINY_GPT_CHANNELS,  # the vocoder reads the GPT's latents
    "gpt_max_audio_tokens": TINY_MAX_AUDIO_TOKENS,
}

TOKENIZER_CORPUS = [
    "hello world, this is a test of a tiny voice.",
    "the quick brown fox jumps over the lazy dog.",
    "streaming speech comes out in small pieces, one after another!",
    "can you hear me? yes, i can hear you well.",
    "bonjour à tous, ça va très bien, merci.",
    "hola, ¿cómo estás? muy bien, gracias.",
    "guten tag, schöne grüße aus münchen.",
    "olá, tudo bem? até já.",
    "zero one two three four five six seven eight nine ten",
]


def _tokenizer_json(languages: list[str]) -> str:
    """A byte-pair vocabulary in the format coqui's ``VoiceBpeTokenizer`` reads."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    special = ["[STOP]", "[UNK]", "[SPACE]", "[START]"] + [f"[{code}]" for code in languages]
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    alphabet = sorted(set("".join(TOKENIZER_CORPUS)) - {" "})
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE, special_tokens=special, initial_alphabet=alphabet
    )
    tokenizer.train_from_iterator(TOKENIZER_CORPUS * 4, trainer)
    text: str = tokenizer.to_str()
    return text


def _shared_draws(state: dict[str, Any]) -> dict[str, Any]:
    """Float tensors as float16, one tensor per (shape, role) shared by every key that has it."""
    import torch

    shared: dict[tuple[Any, ...], Any] = {}
    out: dict[str, Any] = {}
    for key, tensor in state.items():
        if not torch.is_floating_point(tensor) or key == "mel_stats":
            out[key] = tensor.clone()
            continue
        role = key.rsplit(".", 1)[-1]
        slot = (tuple(tensor.shape), role)
        if slot not in shared:
            shared[slot] = tensor.detach().to(torch.float16).clone()
        out[key] = shared[slot]
    return out


def write_tiny_xtts(models_dir: Path) -> Path:
    """Write a tiny random XTTS v2 into ``models_dir / xtts_v2``; return that directory."""
    import torch
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    target = models_dir / XTTS_DIR
    target.mkdir(parents=True, exist_ok=True)
    config = XttsConfig()
    document = config.to_dict()
    document["model_args"].update(PUBLISHED_MODEL_ARGS)
    document["model_args"].update(TINY_OVERRIDES)
    document.update(PUBLISHED_INFERENCE)
    (target / CONFIG_FILE).write_text(json.dumps(document, indent=2), encoding="utf-8")
    (target / VOCAB_FILE).write_text(_tokenizer_json(document["languages"]), encoding="utf-8")

    config.load_json(str(target / CONFIG_FILE))
    torch.manual_seed(SEED)
    model = Xtts.init_from_config(config)
    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(target / VOCAB_FILE))
    model.init_models()  # builds the GPT for this vocabulary, as load_checkpoint does
    state = _shared_draws(model.state_dict())
    # random logits would end a sentence at a random token; never ending it makes every
    # sentence exactly GENERATED_TOKENS_PER_SENTENCE long, so chunk counts are predictable
    mel_bias = state["gpt.mel_head.bias"].clone()
    mel_bias[config.model_args.gpt_stop_audio_token] = STOP_TOKEN_LOGIT_BIAS
    state["gpt.mel_head.bias"] = mel_bias
    model.load_state_dict(state)
    model.eval()
    torch.save({"model": state}, target / CHECKPOINT_FILE)

    speakers: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(BUILT_IN_SPEAKERS):
        audio = torch.from_numpy(voiced_signal(SPEAKER_REFERENCE_S, seed=index))[None]
        with torch.inference_mode():
            speakers[name] = {
                "gpt_cond_latent": model.get_gpt_cond_latents(audio, REFERENCE_RATE_HZ),
                "speaker_embedding": model.get_speaker_embedding(audio, REFERENCE_RATE_HZ),
            }
    torch.save(speakers, target / SPEAKERS_FILE)
    return target
