"""A tiny SpeechT5 with random weights, in exactly the layout ``tools.fetch_models`` writes (built
at test time, and by ``tools.engine_bench`` when the published weights are not there).

The published checkpoints cannot be downloaded here, so this builds the real architectures
(``SpeechT5ForTextToSpeech``, ``SpeechT5HifiGan``) from shrunk configurations with seeded random
weights, a sentencepiece character tokenizer trained on a few hundred generated English lines,
and a random x-vector table, and writes them with ``save_pretrained``. The backend then loads
them through its real ``from_pretrained`` code. The audio is noise; its shape is what counts.

The stop-token head is biased so that the model never asks to stop: the worst case of random
weights, which the backend must bound by text length.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np

from engines.speecht5_engine import SPEAKERS_FILE, TTS_DIR, VOCODER_DIR

FIXTURE_SEED = 1234
FIXTURE_SPEAKER_ROWS = 8_000
"""More rows than the published 7,931, so every speaker of ``voices.yaml`` exists."""
SPEAKER_EMBEDDING_DIM = 32
"""The published x-vectors have 512 dimensions; 32 keeps the table at 1 MB (the backend reads
the width from the model's configuration)."""
FIXTURE_MAX_TEXT_POSITIONS = 96
"""Small, so that a long sentence exercises the backend's cut into model-sized parts."""
NEVER_STOP_BIAS = -20.0
"""Bias of the stop-token head: sigmoid(-20) is ~2e-9, far below any threshold."""
VOCODER_INIT_RANGE = 0.2
"""With the published 0.01 a tiny random HiFi-GAN outputs ~1e-10; 0.2 gives ~-30 dBFS noise."""
TRAINING_LINES = 300

_WORDS = """the a an and but or so because of to in on at for with from by about over under
after before while when where which who this that these those it its they them their we our
you your he she his her one two three four five six seven ten hundred first last next time
day night morning evening week year people voice sound speech word sentence story music light
water river city road house room door window table chair book letter phone message station
train plane ship car bridge market garden forest mountain weather rain snow wind sun moon
star quickly slowly quietly clearly always never often sometimes today tomorrow yesterday
here there now then please thank hello welcome good great small large long short warm cold
bright dark early late open close start stop read write speak listen call answer ask tell
show help find keep bring carry move turn walk run wait think know remember learn begin""".split()
_PUNCTUATION = [".", ".", ".", "?", "!", ",", ";", ":", "-", "'", '"', "(", ")"]
_EXTRA_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz 0123456789 &%$#@/+=*"


def english_training_lines(count: int = TRAINING_LINES, seed: int = FIXTURE_SEED) -> list[str]:
    """``count`` English-looking lines from a fixed word list (no downloads)."""
    rng = random.Random(seed)
    lines = [_EXTRA_CHARACTERS]
    while len(lines) < count:
        words = rng.choices(_WORDS, k=rng.randint(4, 14))
        words[0] = words[0].capitalize()
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 2025)))
        text = " ".join(words)
        lines.append(text + rng.choice(_PUNCTUATION))
    return lines


def _train_char_tokenizer(path: Path) -> None:
    import sentencepiece as spm

    model = io.BytesIO()
    # the ids of the published spm_char.model: <s>=0, <pad>=1, </s>=2, <unk>=3
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(english_training_lines()),
        model_writer=model,
        model_type="char",
        vocab_size=200,
        hard_vocab_limit=False,
        character_coverage=1.0,
        bos_id=0,
        pad_id=1,
        eos_id=2,
        unk_id=3,
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())


def build_tiny_speecht5(models_dir: Path, *, seed: int = FIXTURE_SEED) -> Path:
    """Write a tiny SpeechT5 (tts, hifigan, speakers.npy) under ``models_dir``; returns it."""
    import torch
    from transformers import (
        SpeechT5Config,
        SpeechT5FeatureExtractor,
        SpeechT5ForTextToSpeech,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        SpeechT5Processor,
        SpeechT5Tokenizer,
    )

    tts_dir = models_dir / TTS_DIR
    vocoder_dir = models_dir / VOCODER_DIR
    tts_dir.mkdir(parents=True, exist_ok=True)
    vocoder_dir.mkdir(parents=True, exist_ok=True)

    spm_path = models_dir / "spm_char.model"
    _train_char_tokenizer(spm_path)
    tokenizer = SpeechT5Tokenizer(vocab_file=str(spm_path))
    processor = SpeechT5Processor(feature_extractor=SpeechT5FeatureExtractor(), tokenizer=tokenizer)
    processor.save_pretrained(str(tts_dir))
    spm_path.unlink()

    torch.manual_seed(seed)
    config = SpeechT5Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        encoder_layers=1,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=64,
        speech_decoder_prenet_units=32,
        speech_decoder_postnet_layers=2,
        speech_decoder_postnet_units=32,
        speaker_embedding_dim=SPEAKER_EMBEDDING_DIM,
        max_text_positions=FIXTURE_MAX_TEXT_POSITIONS,
        encoder_max_relative_position=16,
    )
    model = SpeechT5ForTextToSpeech(config).eval()
    with torch.no_grad():
        model.speech_decoder_postnet.prob_out.bias.fill_(NEVER_STOP_BIAS)
    model.save_pretrained(str(tts_dir))

    vocoder_config = SpeechT5HifiGanConfig(
        initializer_range=VOCODER_INIT_RANGE,
        upsample_initial_channel=16,
        resblock_kernel_sizes=(3,),
        resblock_dilation_sizes=((1, 3),),
    )
    SpeechT5HifiGan(vocoder_config).eval().save_pretrained(str(vocoder_dir))

    rng = np.random.default_rng(seed)
    speakers = rng.standard_normal((FIXTURE_SPEAKER_ROWS, SPEAKER_EMBEDDING_DIM), dtype=np.float32)
    speakers /= np.linalg.norm(speakers, axis=1, keepdims=True)
    np.save(models_dir / SPEAKERS_FILE, speakers)
    return models_dir
