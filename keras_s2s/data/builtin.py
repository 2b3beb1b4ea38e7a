"""A built-in translation task: English-like sentences into a made-up language.

No download, no licence, fully deterministic: `generate_pairs(n, seed)` is a
pure function of its arguments (it draws only from `random.Random.random()`,
whose sequence Python guarantees across versions), and the lexicon below is
fixed. The task is small enough for a 2+2-layer, d=128 Transformer to learn
in minutes on a CPU, yet needs what translation needs: a lexicon, reordering
over long distances, agreement and clause structure.

The target is a deterministic function of the source sentence (every source
sentence has exactly one parse and one translation), so a perfect model
reaches BLEU 100.

Grammar of the source (English-like, about 420 word forms)::

    Sentence  := Clause | Clause ("and" | "but") Clause
    Clause    := NP VerbGroup [NP] [Prep NP] [Adverb]   # object iff transitive
    NP        := Det Adj{0,2} Noun [Relative]           # Relative only on a
    Relative  := "that" VerbGroup [NP]                  #   subject or object
    VerbGroup := Verb                # "runs" / "run" / "ran"
               | Aux "not" Verb      # "does not run" / "do not run" / "did not run"

* Nouns have a singular and a plural form (all different). Determiners fix
  or follow the number: "a", "every" are singular; "some", "two".."five"
  plural; "this"/"these" spell it; "the", "my", "your", "our" allow both.
  "a" becomes "an" before a vowel.
* The verb agrees with its subject in the present tense ("runs" / "run");
  a relative clause's subject is its head noun.
* Verbs are lexically transitive or intransitive, relative clauses carry no
  place, adverb or further relative, and prepositional phrases and adverbs
  belong to the clause: so the source never has an ambiguous parse.
* Length: 3 to 20 words. The first letter is upper-case and the sentence
  ends with "." (attached to the last word).

Grammar of the target (about 600 word forms)::

    Clause   := NP [NP Postposition] [NP] [Adverb] ["ne"] Verb   # SOV
    NP       := Det Noun Adj{0,2} ["ke" Relative]                # Adj after noun
    Relative := [NP] ["ne"] Verb                                 # verb-final
    Sentence := Clause | Clause ("im" | "ves") Clause

* Word order: subject, place, object, adverb, verb (the English order is
  subject, verb, object, place, adverb); prepositions become postpositions;
  adjectives follow the noun (in the English order); a relative clause
  follows its noun, introduced by "ke", with its verb last.
* Every noun has one of two lexical genders. Determiners and adjectives
  agree with their noun in gender and number by a suffix::

               singular  plural
      gender 1   -o        -on
      gender 2   -e        -en

  (Numerals "du", "tri", "kvar", "kvin" do not inflect.) Plural nouns add
  "-i". Verbs mark tense and the number of their subject: present "-a"
  (singular) / "-an" (plural), past "-it" / "-iten". Negation is the
  particle "ne" before the verb, where English uses "does/do/did not".
* Content words are made-up stems drawn once, from a fixed seed, such that
  no two word forms of the language coincide.

Examples (hand-built; "dog" and "cat" are of gender 2, "garden" of
gender 1)::

    The big dogs do not see a red cat in the garden.
    Ten nipigi regofen to rafas ena une devir dazode ne sogelan.
     the dogs  big     the garden in  a  cat  red   not see

    The woman that liked the apples sleeps.
    Te mesis ke ten zupezi peverit limoma.
"""

from __future__ import annotations

import dataclasses
import os
import random
from typing import NamedTuple

from keras_s2s.checks import check_non_negative_int, check_positive_int

# --------------------------------------------------------------------------
# Lexicon. English forms are written out; target stems are drawn below.

# (singular, plural)
_NOUNS = [
    ("dog", "dogs"), ("cat", "cats"), ("bird", "birds"), ("horse", "horses"),
    ("cow", "cows"), ("child", "children"), ("man", "men"), ("woman", "women"),
    ("teacher", "teachers"), ("student", "students"), ("doctor", "doctors"),
    ("farmer", "farmers"), ("king", "kings"), ("queen", "queens"),
    ("girl", "girls"), ("boy", "boys"), ("baby", "babies"),
    ("friend", "friends"), ("neighbor", "neighbors"), ("soldier", "soldiers"),
    ("driver", "drivers"), ("singer", "singers"), ("sailor", "sailors"),
    ("lion", "lions"), ("tiger", "tigers"), ("wolf", "wolves"), ("fox", "foxes"),
    ("mouse", "mice"), ("rabbit", "rabbits"), ("snake", "snakes"),
    ("duck", "ducks"), ("frog", "frogs"), ("monkey", "monkeys"),
    ("bear", "bears"), ("book", "books"), ("letter", "letters"),
    ("apple", "apples"), ("table", "tables"), ("chair", "chairs"),
    ("house", "houses"), ("car", "cars"), ("boat", "boats"), ("tree", "trees"),
    ("flower", "flowers"), ("river", "rivers"), ("mountain", "mountains"),
    ("city", "cities"), ("village", "villages"), ("garden", "gardens"),
    ("school", "schools"), ("street", "streets"), ("window", "windows"),
    ("door", "doors"), ("box", "boxes"), ("cup", "cups"), ("bottle", "bottles"),
    ("ball", "balls"), ("song", "songs"), ("picture", "pictures"),
    ("key", "keys"), ("bag", "bags"), ("hat", "hats"), ("shoe", "shoes"),
    ("bed", "beds"), ("road", "roads"), ("bridge", "bridges"),
    ("ship", "ships"), ("stone", "stones"), ("egg", "eggs"), ("cake", "cakes"),
    ("lamp", "lamps"), ("clock", "clocks"), ("bell", "bells"),
    ("coin", "coins"), ("ring", "rings"), ("map", "maps"), ("pen", "pens"),
    ("basket", "baskets"), ("candle", "candles"), ("island", "islands"),
    ("forest", "forests"), ("kitchen", "kitchens"), ("castle", "castles"),
    ("tower", "towers"),
]

_ADJECTIVES = [
    "big", "small", "old", "young", "red", "blue", "green", "white", "black",
    "yellow", "happy", "sad", "tall", "heavy", "quiet", "loud", "beautiful",
    "ugly", "strong", "weak", "hungry", "tired", "angry", "clever", "brave",
    "kind", "rich", "poor", "warm", "cold", "dark", "bright", "new", "strange",
    "famous", "empty", "soft", "wet", "dry", "sweet",
]

# (base, third person singular, past); every past differs from the base so
# that tense is never ambiguous with a plural subject.
_TRANSITIVE_VERBS = [
    ("see", "sees", "saw"), ("like", "likes", "liked"),
    ("find", "finds", "found"), ("take", "takes", "took"),
    ("eat", "eats", "ate"), ("carry", "carries", "carried"),
    ("follow", "follows", "followed"), ("watch", "watches", "watched"),
    ("hold", "holds", "held"), ("want", "wants", "wanted"),
    ("love", "loves", "loved"), ("paint", "paints", "painted"),
    ("help", "helps", "helped"), ("visit", "visits", "visited"),
    ("push", "pushes", "pushed"), ("pull", "pulls", "pulled"),
    ("open", "opens", "opened"), ("build", "builds", "built"),
    ("buy", "buys", "bought"), ("sell", "sells", "sold"),
    ("bring", "brings", "brought"), ("catch", "catches", "caught"),
    ("draw", "draws", "drew"), ("write", "writes", "wrote"),
    ("hear", "hears", "heard"), ("know", "knows", "knew"),
    ("forget", "forgets", "forgot"), ("wash", "washes", "washed"),
    ("touch", "touches", "touched"), ("throw", "throws", "threw"),
    ("hide", "hides", "hid"), ("keep", "keeps", "kept"),
    ("call", "calls", "called"), ("meet", "meets", "met"),
    ("choose", "chooses", "chose"), ("steal", "steals", "stole"),
]

_INTRANSITIVE_VERBS = [
    ("run", "runs", "ran"), ("sleep", "sleeps", "slept"),
    ("sing", "sings", "sang"), ("dance", "dances", "danced"),
    ("swim", "swims", "swam"), ("walk", "walks", "walked"),
    ("jump", "jumps", "jumped"), ("laugh", "laughs", "laughed"),
    ("cry", "cries", "cried"), ("smile", "smiles", "smiled"),
    ("wait", "waits", "waited"), ("fall", "falls", "fell"),
    ("sit", "sits", "sat"), ("stand", "stands", "stood"),
    ("arrive", "arrives", "arrived"), ("shout", "shouts", "shouted"),
    ("play", "plays", "played"), ("work", "works", "worked"),
    ("rest", "rests", "rested"), ("fly", "flies", "flew"),
]

_ADVERBS = [
    "quickly", "slowly", "quietly", "loudly", "happily", "sadly", "carefully",
    "suddenly", "often", "again", "together", "today",
]

# English preposition -> target postposition.
_PREPOSITIONS = {
    "in": "ena", "on": "supra", "near": "apud", "behind": "malo",
    "under": "suba", "with": "kun", "from": "dal", "to": "vers",
}


@dataclasses.dataclass(frozen=True)
class _Determiner:
    singular: str | None  # English form with a singular noun; None: not allowed
    plural: str | None
    target: str  # a stem taking the agreement suffix, or a fixed word
    inflects: bool = True


_DETERMINERS = {
    "the": _Determiner("the", "the", "t"),
    "a": _Determiner("a", None, "un"),
    "some": _Determiner(None, "some", "kel"),
    "this": _Determiner("this", "these", "ist"),
    "my": _Determiner("my", "my", "mi"),
    "your": _Determiner("your", "your", "vi"),
    "our": _Determiner("our", "our", "ni"),
    "every": _Determiner("every", None, "cad"),
    "two": _Determiner(None, "two", "du", inflects=False),
    "three": _Determiner(None, "three", "tri", inflects=False),
    "four": _Determiner(None, "four", "kvar", inflects=False),
    "five": _Determiner(None, "five", "kvin", inflects=False),
}
# Repeated keys weight the draw: "the" and "a" are the most common.
_DETERMINER_DRAW = ["the"] * 6 + ["a"] * 3 + [
    "some", "this", "my", "your", "our", "every", "two", "three", "four", "five",
]

# Agreement suffix by (gender, plural).
_AGREEMENT = {(1, False): "o", (1, True): "on", (2, False): "e", (2, True): "en"}
_NOUN_PLURAL = "i"
# Verb suffix by (past, plural subject).
_VERB_ENDINGS = {
    (False, False): "a", (False, True): "an", (True, False): "it", (True, True): "iten"
}
_NEGATION = "ne"
_RELATIVE = "ke"
_CONJUNCTIONS = {"and": "im", "but": "ves"}

MIN_WORDS = 3
MAX_WORDS = 20

# The lexicon's made-up stems come from this fixed seed, never from the
# caller's: every seed must describe the same language.
_LEXICON_SEED = 20_240_607


class _Sampler:
    """Draws from `random.Random(seed).random()` only.

    Python guarantees that sequence across versions, but not that of
    `choice`, `shuffle` or `randrange`; building on `random()` keeps the
    corpus identical on every interpreter.
    """

    def __init__(self, seed: int):
        self._random = random.Random(seed)

    def below(self, n: int) -> int:
        return min(int(self._random.random() * n), n - 1)

    def choice(self, items):
        return items[self.below(len(items))]

    def chance(self, probability: float) -> bool:
        return self._random.random() < probability


def _draw_stems():
    """Made-up target stems for every content word; no two forms coincide.

    Returns:
        `(nouns, adjectives, verbs, adverbs)`: dicts from the English word
        (singular, base form) to its stem; a noun's value is `(stem, gender)`.
    """
    sampler = _Sampler(_LEXICON_SEED)
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    taken = {_NEGATION, _RELATIVE, *_CONJUNCTIONS.values(), *_PREPOSITIONS.values()}
    for determiner in _DETERMINERS.values():
        if determiner.inflects:
            taken.update(determiner.target + suffix for suffix in _AGREEMENT.values())
        else:
            taken.add(determiner.target)

    stems = set()

    def new_stem(suffixes):
        while True:
            # CVCVC: 68,600 possible stems for about 200 words.
            stem = "".join(
                sampler.choice(letters)
                for letters in (consonants, vowels, consonants, vowels, consonants)
            )
            forms = {stem + suffix for suffix in suffixes}
            # Distinct stems too, not only distinct forms: a noun and a verb
            # sharing a stem would be a homonym the model must disentangle.
            if stem not in stems and not forms & taken:
                stems.add(stem)
                taken.update(forms)
                return stem

    nouns = {}
    for singular, _ in _NOUNS:
        gender = 1 + sampler.below(2)
        nouns[singular] = (new_stem(["", _NOUN_PLURAL]), gender)
    adjectives = {word: new_stem(_AGREEMENT.values()) for word in _ADJECTIVES}
    verbs = {
        base: new_stem(_VERB_ENDINGS.values())
        for base, _, _ in _TRANSITIVE_VERBS + _INTRANSITIVE_VERBS
    }
    adverbs = {word: new_stem([""]) for word in _ADVERBS}
    return nouns, adjectives, verbs, adverbs


_NOUN_STEMS, _ADJECTIVE_STEMS, _VERB_STEMS, _ADVERB_STEMS = _draw_stems()
_NOUN_PLURALS = dict(_NOUNS)
_VERB_FORMS = {base: (third, past) for base, third, past in _TRANSITIVE_VERBS + _INTRANSITIVE_VERBS}
_TRANSITIVE = {base for base, _, _ in _TRANSITIVE_VERBS}

# --------------------------------------------------------------------------
# The abstract sentence, rendered once in each language.


@dataclasses.dataclass(frozen=True)
class _NounPhrase:
    determiner: str  # a key of _DETERMINERS
    adjectives: tuple[str, ...]
    noun: str  # English singular
    plural: bool
    relative: _Clause | None = None  # its subject is this noun phrase


@dataclasses.dataclass(frozen=True)
class _Clause:
    subject: _NounPhrase | None  # None in a relative clause
    verb: str  # English base form
    past: bool
    negated: bool
    object: _NounPhrase | None = None  # present iff the verb is transitive
    place: tuple[str, _NounPhrase] | None = None  # (preposition, noun phrase)
    adverb: str | None = None


@dataclasses.dataclass(frozen=True)
class _Sentence:
    clauses: tuple[_Clause, ...]
    conjunctions: tuple[str, ...]  # len(clauses) - 1 English conjunctions


def _english_noun_phrase(phrase: _NounPhrase) -> list[str]:
    determiner = _DETERMINERS[phrase.determiner]
    noun = _NOUN_PLURALS[phrase.noun] if phrase.plural else phrase.noun
    words = [determiner.plural if phrase.plural else determiner.singular]
    words += [*phrase.adjectives, noun]
    if phrase.relative is not None:
        words += ["that", *_english_predicate(phrase.relative, phrase.plural)]
    return words


def _english_predicate(clause: _Clause, plural_subject: bool) -> list[str]:
    third, past = _VERB_FORMS[clause.verb]
    if clause.negated:
        auxiliary = "did" if clause.past else ("do" if plural_subject else "does")
        words = [auxiliary, "not", clause.verb]
    elif clause.past:
        words = [past]
    else:
        words = [clause.verb if plural_subject else third]
    if clause.object is not None:
        words += _english_noun_phrase(clause.object)
    if clause.place is not None:
        preposition, phrase = clause.place
        words += [preposition, *_english_noun_phrase(phrase)]
    if clause.adverb is not None:
        words.append(clause.adverb)
    return words


def _english(sentence: _Sentence) -> list[str]:
    words = []
    for index, clause in enumerate(sentence.clauses):
        if index:
            words.append(sentence.conjunctions[index - 1])
        words += _english_noun_phrase(clause.subject)
        words += _english_predicate(clause, clause.subject.plural)
    # "a" is only ever the determiner, so this is the whole a/an rule.
    return [
        "an" if word == "a" and words[i + 1][0] in "aeiou" else word
        for i, word in enumerate(words)
    ]


def _target_noun_phrase(phrase: _NounPhrase) -> list[str]:
    stem, gender = _NOUN_STEMS[phrase.noun]
    suffix = _AGREEMENT[gender, phrase.plural]
    determiner = _DETERMINERS[phrase.determiner]
    words = [determiner.target + suffix if determiner.inflects else determiner.target]
    words.append(stem + _NOUN_PLURAL if phrase.plural else stem)
    words += [_ADJECTIVE_STEMS[adjective] + suffix for adjective in phrase.adjectives]
    if phrase.relative is not None:
        words += [_RELATIVE, *_target_predicate(phrase.relative, phrase.plural)]
    return words


def _target_predicate(clause: _Clause, plural_subject: bool) -> list[str]:
    words = []
    if clause.place is not None:
        preposition, phrase = clause.place
        words += [*_target_noun_phrase(phrase), _PREPOSITIONS[preposition]]
    if clause.object is not None:
        words += _target_noun_phrase(clause.object)
    if clause.adverb is not None:
        words.append(_ADVERB_STEMS[clause.adverb])
    if clause.negated:
        words.append(_NEGATION)
    words.append(_VERB_STEMS[clause.verb] + _VERB_ENDINGS[clause.past, plural_subject])
    return words


def _target(sentence: _Sentence) -> list[str]:
    words = []
    for index, clause in enumerate(sentence.clauses):
        if index:
            words.append(_CONJUNCTIONS[sentence.conjunctions[index - 1]])
        words += _target_noun_phrase(clause.subject)
        words += _target_predicate(clause, clause.subject.plural)
    return words


def _as_text(words: list[str]) -> str:
    return words[0][0].upper() + " ".join(words)[1:] + "."


def _translate(sentence: _Sentence) -> tuple[str, str]:
    return _as_text(_english(sentence)), _as_text(_target(sentence))


# --------------------------------------------------------------------------
# Drawing sentences.


def _draw_noun_phrase(sampler: _Sampler, allow_relative: bool) -> _NounPhrase:
    determiner_key = sampler.choice(_DETERMINER_DRAW)
    determiner = _DETERMINERS[determiner_key]
    if determiner.singular is None:
        plural = True
    elif determiner.plural is None:
        plural = False
    else:
        plural = sampler.chance(0.4)
    count = sampler.choice([0] * 11 + [1] * 7 + [2] * 2)  # 55% / 35% / 10%
    adjectives = []
    while len(adjectives) < count:
        adjective = sampler.choice(_ADJECTIVES)
        if adjective not in adjectives:
            adjectives.append(adjective)
    relative = None
    if allow_relative and sampler.chance(0.15):
        relative = _draw_clause(sampler, subject=None, relative=True)
    return _NounPhrase(
        determiner_key, tuple(adjectives), sampler.choice(_NOUNS)[0], plural, relative
    )


def _draw_clause(sampler: _Sampler, subject: _NounPhrase | None, relative: bool) -> _Clause:
    transitive = sampler.chance(0.6)
    verb = sampler.choice(_TRANSITIVE_VERBS if transitive else _INTRANSITIVE_VERBS)[0]
    past = sampler.chance(0.5)
    negated = sampler.chance(0.1 if relative else 0.15)
    obj = _draw_noun_phrase(sampler, allow_relative=not relative) if transitive else None
    place = adverb = None
    if not relative:
        if sampler.chance(0.3):
            place = (
                sampler.choice(list(_PREPOSITIONS)),
                _draw_noun_phrase(sampler, allow_relative=False),
            )
        if sampler.chance(0.2):
            adverb = sampler.choice(_ADVERBS)
    return _Clause(subject, verb, past, negated, obj, place, adverb)


def _draw_sentence(sampler: _Sampler) -> _Sentence:
    clauses, conjunctions = [], []
    for index in range(2 if sampler.chance(0.25) else 1):
        if index:
            conjunctions.append("and" if sampler.chance(0.7) else "but")
        subject = _draw_noun_phrase(sampler, allow_relative=True)
        clauses.append(_draw_clause(sampler, subject, relative=False))
    return _Sentence(tuple(clauses), tuple(conjunctions))


def generate_pairs(num_pairs: int, seed: int = 0) -> list[tuple[str, str]]:
    """Distinct (source, target) sentence pairs of the built-in task.

    Args:
        num_pairs: how many pairs; all source sentences are different.
        seed: any integer; the same seed gives the same list on every run
            and Python version, different seeds give different lists.

    Returns:
        A list of `num_pairs` `(english, target)` string pairs, 3 to 20
        words each.

    Example:
    >>> generate_pairs(2, seed=0)
    [('Every tree touched my bed.', 'Cado nokad mio movum dizudit.'),
     ('Five soft hats did not stand.', 'Kvin didadi zoripon ne lofuniten.')]
    """
    for name, value in (("num_pairs", num_pairs), ("seed", seed)):
        check_non_negative_int(name, value)
    sampler = _Sampler(seed)
    pairs, seen = [], set()
    # The language has far more than 10**9 sentences; the bound only turns a
    # bug (a grammar that stops producing new sentences) into an error.
    attempts_left = 20 * num_pairs + 1000
    while len(pairs) < num_pairs:
        if not attempts_left:
            raise RuntimeError(
                f"the built-in grammar produced only {len(pairs)} distinct "
                f"sentences, fewer than num_pairs={num_pairs}"
            )
        attempts_left -= 1
        source, target = _translate(_draw_sentence(sampler))
        if MIN_WORDS <= len(source.split()) <= MAX_WORDS and source not in seen:
            seen.add(source)
            pairs.append((source, target))
    return pairs


class CorpusSplits(NamedTuple):
    """Paths of the three TSV files written by `write_builtin_corpus`."""

    train: str
    valid: str
    test: str


def write_builtin_corpus(
    directory: str | os.PathLike,
    *,
    seed: int = 0,
    train: int = 20_000,
    valid: int = 500,
    test: int = 500,
) -> CorpusSplits:
    """Writes `train.tsv`, `valid.tsv` and `test.tsv` of the built-in task.

    The splits share no sentence. Validation and test pairs are drawn first,
    so they do not depend on `train`: a run on 5,000 training pairs and one
    on 20,000 are scored on the same sentences.

    Args:
        directory: created if missing; existing files of the same names are
            replaced (atomically, so a reader never sees half a file).
        seed: seed of `generate_pairs`.
        train: number of training pairs.
        valid: number of validation pairs.
        test: number of test pairs.

    Returns:
        `CorpusSplits(train, valid, test)` paths, each a `source<TAB>target`
        file readable with `corpus.read_tsv`.
    """
    for name, value in (("train", train), ("valid", valid), ("test", test)):
        check_positive_int(name, value)
    pairs = generate_pairs(valid + test + train, seed)
    os.makedirs(directory, exist_ok=True)
    parts = {
        "valid": pairs[:valid],
        "test": pairs[valid : valid + test],
        "train": pairs[valid + test :],
    }
    paths = {}
    for split, split_pairs in parts.items():
        path = os.path.join(os.fspath(directory), f"{split}.tsv")
        partial = path + ".partial"
        with open(partial, "w", encoding="utf-8", newline="\n") as file:
            file.writelines(f"{source}\t{target}\n" for source, target in split_pairs)
        os.replace(partial, path)
        paths[split] = path
    return CorpusSplits(**paths)
