"""A tiny random Marian checkpoint, built offline: SentencePiece models trained here,
a vocab.json joining their pieces, and a randomly initialised MarianMTModel.

Needs transformers and torch (test-only dependencies).
"""

import io
import json
import os

import numpy as np
import sentencepiece as spm

WORDS_SOURCE = (
    "the a small big dog cat house tree river sees runs eats green red old young man "
    "woman child bird car street city water near over under quickly slowly happy"
).split()
WORDS_TARGET = (
    "der die das ein eine kleine große hund katze haus baum fluss sieht läuft isst grün "
    "rot alt jung mann frau kind vogel auto straße stadt wasser nahe über unter schnell"
).split()


def sentences(words, count, seed):
    rng = np.random.default_rng(seed)
    punctuation = [".", "!", "?", ",", ""]
    out = []
    for _ in range(count):
        length = int(rng.integers(1, 9))
        text = " ".join(rng.choice(words, size=length))
        if rng.random() < 0.3:
            text = text.capitalize()
        if rng.random() < 0.2:
            text += " " + str(int(rng.integers(0, 1000)))
        out.append(text + str(rng.choice(punctuation)))
    return out


def train_spm(lines, vocab_size, model_type="unigram"):
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=writer,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    return writer.getvalue()


def build_marian_checkpoint(directory, *, seed=0, d_model=16, layers=2, max_positions=64):
    """Writes a Marian checkpoint into `directory`; returns (model, tokenizer)."""
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    os.makedirs(directory, exist_ok=True)
    source_proto = train_spm(sentences(WORDS_SOURCE, 400, seed), 90)
    target_proto = train_spm(sentences(WORDS_TARGET, 400, seed + 1), 90, "bpe")
    for name, proto in (("source.spm", source_proto), ("target.spm", target_proto)):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(proto)
    # Marian's layout: </s> = 0, <unk> = 1, the pieces of both models, a
    # language tag, <pad> last.
    vocab = {"</s>": 0, "<unk>": 1}
    for proto in (source_proto, target_proto):
        processor = spm.SentencePieceProcessor(model_proto=proto)
        for i in range(processor.get_piece_size()):
            if not (processor.is_control(i) or processor.is_unknown(i)):
                vocab.setdefault(processor.id_to_piece(i), len(vocab))
    vocab.setdefault(">>de<<", len(vocab))
    vocab["<pad>"] = len(vocab)
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)

    size = len(vocab)
    config = MarianConfig(
        vocab_size=size,
        decoder_vocab_size=size,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model,
        max_position_embeddings=max_positions,
        activation_function="swish",
        scale_embedding=True,
        pad_token_id=size - 1,
        decoder_start_token_id=size - 1,
        eos_token_id=0,
        forced_eos_token_id=0,
        dropout=0.1,
    )
    torch.manual_seed(seed)
    model = MarianMTModel(config).eval()
    with torch.no_grad():
        # A random bias (zero in a fresh model) so that its import is tested,
        # tilted to </s> so that searches end within a few tokens.
        bias = torch.randn(1, size) * 0.5
        bias[0, 0] += 5.6
        model.final_logits_bias.copy_(bias)
        # Larger random weights than the init's 0.02, so that logits differ
        # enough between tokens for the searches to be meaningful.
        for name, parameter in model.named_parameters():
            if name.endswith("weight") and parameter.dim() == 2:
                parameter.normal_(0.0, 0.3)
            elif name.endswith("bias"):
                parameter.normal_(0.0, 0.1)
        model.tie_weights()
        model.model.shared.weight[size - 1].zero_()  # <pad> embedding zero, as trained Marian has
    model.save_pretrained(directory)
    tokenizer = MarianTokenizer(
        os.path.join(directory, "source.spm"),
        os.path.join(directory, "target.spm"),
        os.path.join(directory, "vocab.json"),
    )
    tokenizer.save_pretrained(directory)
    return model, tokenizer


# --------------------------------------------------------------------------
# Reference outputs of the PyTorch model and MarianTokenizer. They are
# computed in a process of their own: importing torch's triton after
# TensorFlow crashes the process (torch 2.14 CUDA wheel, TF 2.21), and a
# separate process also proves that nothing leaks between the two sides.
# --------------------------------------------------------------------------

MAX_NEW_TOKENS = 12
LOGITS_SOURCES = ["the small dog sees a cat .", "Green", "a river near the old house runs slowly"]
LOGITS_TARGETS = ["der kleine hund sieht eine katze .", "grün", "ein fluss"]
SEARCH_SOURCES = sentences(WORDS_SOURCE, 24, seed=7)


def tokenizer_sentences():
    """A few hundred varied sentences: both vocabularies, unknown characters,
    numbers, case, spacing, language tags."""
    texts = sentences(WORDS_SOURCE, 150, seed=11) + sentences(WORDS_TARGET, 150, seed=12)
    texts += [
        "Zebra ünknown çharacters 漢字 and émojis 🙂!",
        "  leading and trailing spaces  ",
        "double  spaces\tand a tab",
        "UPPER CASE DOG",
        "numbers 12345 67.89",
        ">>de<< the dog runs .",
        ">>xx<< an unknown tag",
        ">>de<<no space",
        "a >>de<< tag inside",
        "x",
        "—–-‐ dashes and “quotes”",
    ]
    return texts


def _generate(model, input_ids, attention_mask, **options):
    import torch

    pad, eos = model.config.pad_token_id, model.config.eos_token_id
    with torch.no_grad():
        output = model.generate(
            input_ids=torch.tensor(input_ids),
            attention_mask=torch.tensor(attention_mask),
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            # Marian's <pad> is its start token, never an output (OPUS-MT
            # checkpoints set the same bad_words_ids in generation_config.json).
            bad_words_ids=[[pad]],
            **options,
        ).numpy()
    rows = []
    for row in output[:, 1:]:  # drop the start token
        tokens = []
        for token in row:
            tokens.append(int(token))
            if token == eos:
                break
        rows.append(tokens)
    return rows


def write_reference(directory, output):
    """Builds the checkpoint in `directory` and writes the PyTorch side's outputs to `output` (.npz)."""
    import torch
    from transformers import MarianMTModel

    _, tokenizer = build_marian_checkpoint(directory)
    # The model as a user loads it from the directory (ties the embeddings).
    model = MarianMTModel.from_pretrained(directory).eval()
    # keras_s2s finishes a hypothesis at the length limit as it is; Marian's
    # default forces </s> there. Off, so that the searches coincide.
    model.generation_config.forced_eos_token_id = None
    pad = model.config.pad_token_id
    encoded = tokenizer(LOGITS_SOURCES, padding=True, return_tensors="np")
    labels = tokenizer(text_target=LOGITS_TARGETS, padding=True, return_tensors="np")["input_ids"]
    decoder_ids = np.concatenate([np.full((len(labels), 1), pad), labels[:, :-1]], axis=1)  # shift right
    with torch.no_grad():
        logits = model(
            input_ids=torch.tensor(encoded["input_ids"]),
            attention_mask=torch.tensor(encoded["attention_mask"]),
            decoder_input_ids=torch.tensor(decoder_ids),
        ).logits.numpy()  # (B, T, V)
    search = tokenizer(SEARCH_SOURCES, padding=True, return_tensors="np")
    greedy = _generate(model, search["input_ids"], search["attention_mask"], num_beams=1)
    beam = _generate(
        model, search["input_ids"], search["attention_mask"],
        num_beams=4, length_penalty=0.0, early_stopping=False,
    )
    texts = tokenizer_sentences()
    target_ids = tokenizer(text_target=texts)["input_ids"]
    ragged = {
        "greedy": greedy,
        "beam": beam,
        "source_ids": tokenizer(texts)["input_ids"],
        "target_ids": target_ids,
        "decoded": [tokenizer.decode(row, skip_special_tokens=True) for row in target_ids],
    }
    np.savez(
        output,
        logits_input_ids=encoded["input_ids"],
        logits_attention_mask=encoded["attention_mask"],
        logits_decoder_ids=decoder_ids,
        logits_labels=labels,
        logits=logits,
        search_input_ids=search["input_ids"],
        pad_embedding=model.model.shared.weight[pad].detach().numpy(),
        pad_id=pad,
        eos_id=model.config.eos_token_id,
        ragged=json.dumps(ragged, ensure_ascii=False),
    )
    # The same weights as an older checkpoint's pytorch_model.bin: the whole
    # state dict (tied lm_head and the position tables included).
    bin_dir = os.path.join(os.path.dirname(output), "checkpoint_bin")
    os.makedirs(bin_dir, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(bin_dir, "pytorch_model.bin"))


if __name__ == "__main__":
    import sys

    write_reference(sys.argv[1], sys.argv[2])
