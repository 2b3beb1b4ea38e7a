import re

import pytest

from keras_s2s.data import builtin
from keras_s2s.data.builtin import generate_pairs, write_builtin_corpus
from keras_s2s.data.corpus import read_tsv


@pytest.fixture(scope="module")
def pairs():
    return generate_pairs(3000, seed=0)


def words(text):
    return [word.lower().rstrip(".") for word in text.split()]


def test_same_seed_same_pairs_and_pinned_across_versions(pairs):
    assert generate_pairs(3000, seed=0) == pairs
    # Pinned: only `random.Random.random()` is used, whose sequence Python
    # guarantees, so this holds on every interpreter. Change deliberately.
    assert pairs[:3] == [
        ("Every tree touched my bed.", "Cado nokad mio movum dizudit."),
        ("Five soft hats did not stand.", "Kvin didadi zoripon ne lofuniten."),
        ("Five singers waited.", "Kvin limozi detubiten."),
    ]


def test_different_seeds_differ(pairs):
    other = generate_pairs(3000, seed=1)
    assert len(set(other) & set(pairs)) < 100  # only a few short sentences coincide


def test_target_is_a_function_of_the_source(pairs):
    # Where two seeds draw the same source sentence, they must agree on it.
    translations = dict(pairs)
    other = generate_pairs(5000, seed=7)
    shared = [(source, target) for source, target in other if source in translations]
    assert shared, "expected some short sentences in common"
    assert all(translations[source] == target for source, target in shared)


def test_sentences_are_distinct_and_3_to_20_words(pairs):
    assert len({source for source, _ in pairs}) == len(pairs)
    for source, target in pairs:
        assert 3 <= len(source.split()) <= 20
        assert 3 <= len(target.split()) <= 20
        assert source[0].isupper() and source.endswith(".")
        assert target[0].isupper() and target.endswith(".")


def test_a_few_hundred_words_per_side(pairs):
    source_words = {word for source, _ in pairs for word in words(source)}
    target_words = {word for _, target in pairs for word in words(target)}
    assert 250 <= len(source_words) <= 600
    assert 300 <= len(target_words) <= 800


def test_lengths_vary(pairs):
    lengths = {len(source.split()) for source, _ in pairs}
    assert lengths == set(range(3, 21))


NP, Clause, Sentence = builtin._NounPhrase, builtin._Clause, builtin._Sentence


def test_documented_examples_reorder_and_agree():
    # The two examples of the module docstring.
    sentence = Sentence(
        (
            Clause(
                subject=NP("the", ("big",), "dog", plural=True),
                verb="see",
                past=False,
                negated=True,
                object=NP("a", ("red",), "cat", plural=False),
                place=("in", NP("the", (), "garden", plural=False)),
            ),
        ),
        (),
    )
    assert builtin._translate(sentence) == (
        "The big dogs do not see a red cat in the garden.",
        "Ten nipigi regofen to rafas ena une devir dazode ne sogelan.",
    )
    relative = Clause(None, "like", past=True, negated=False, object=NP("the", (), "apple", True))
    subject = NP("the", (), "woman", False, relative)
    sentence = Sentence((Clause(subject, "sleep", False, False),), ())
    assert builtin._translate(sentence) == (
        "The woman that liked the apples sleeps.",
        "Te mesis ke ten zupezi peverit limoma.",
    )


def test_agreement_follows_gender_and_number():
    def subject(noun, plural):
        sentence = Sentence(
            (Clause(NP("the", ("big",), noun, plural), "run", past=False, negated=False),), ()
        )
        return builtin._translate(sentence)[1].split()

    dog_gender = builtin._NOUN_STEMS["dog"][1]
    garden_gender = builtin._NOUN_STEMS["garden"][1]
    assert dog_gender != garden_gender  # the test needs one noun of each
    for noun in ("dog", "garden"):
        gender = builtin._NOUN_STEMS[noun][1]
        for plural in (False, True):
            article, _, adjective, verb = subject(noun, plural)
            suffix = builtin._AGREEMENT[gender, plural]
            assert article.lower() == "t" + suffix
            assert adjective == builtin._ADJECTIVE_STEMS["big"] + suffix
            assert verb == builtin._VERB_STEMS["run"] + ("an." if plural else "a.")


def test_an_before_vowels():
    sentence = Sentence((Clause(NP("a", ("old",), "apple", False), "fall", True, False),), ())
    assert builtin._translate(sentence)[0] == "An old apple fell."


def test_lexicon_forms_never_coincide():
    # No target word form may stand for two things (the language must be
    # unambiguous); checked over all nouns, adjectives and verbs.
    forms = []
    for stem, _ in builtin._NOUN_STEMS.values():
        forms += [stem, stem + builtin._NOUN_PLURAL]
    for stem in builtin._ADJECTIVE_STEMS.values():
        forms += [stem + suffix for suffix in builtin._AGREEMENT.values()]
    for stem in builtin._VERB_STEMS.values():
        forms += [stem + ending for ending in builtin._VERB_ENDINGS.values()]
    forms += builtin._ADVERB_STEMS.values()
    assert len(forms) == len(set(forms))


@pytest.mark.parametrize("num_pairs", [-1, 2.0, True])
def test_num_pairs_is_validated(num_pairs):
    with pytest.raises(ValueError, match=re.escape(f"received num_pairs={num_pairs!r}")):
        generate_pairs(num_pairs, seed=0)


def test_write_builtin_corpus_splits_are_disjoint_and_readable(tmp_path):
    paths = write_builtin_corpus(tmp_path / "corpus", seed=3, train=1000, valid=100, test=100)
    assert paths.train.endswith("train.tsv")
    splits = {name: list(read_tsv(path)) for name, path in paths._asdict().items()}
    assert {name: len(split) for name, split in splits.items()} == {
        "train": 1000, "valid": 100, "test": 100
    }
    for side in (0, 1):
        sentences = [{pair[side] for pair in split} for split in splits.values()]
        assert sum(map(len, sentences)) == len(set().union(*sentences))
    # Valid and test do not depend on the size of train.
    smaller = write_builtin_corpus(tmp_path / "smaller", seed=3, train=10, valid=100, test=100)
    assert list(read_tsv(smaller.valid)) == splits["valid"]
    assert list(read_tsv(smaller.test)) == splits["test"]
    assert not list(tmp_path.glob("*/*.partial"))


def test_write_builtin_corpus_validates_sizes(tmp_path):
    message = "`valid` must be a positive integer; received valid=0"
    with pytest.raises(ValueError, match=re.escape(message)):
        write_builtin_corpus(tmp_path, valid=0)
