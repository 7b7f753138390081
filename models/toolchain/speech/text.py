"""English sentences for the synthetic speech corpus, and the CTC character vocabulary.

Sentences come from templates over small part-of-speech word lists written here, mixed with words
drawn from a system word list (Debian `wamerican`, /usr/share/dict/words) so the vocabulary is not
closed: every sentence is generated from a seeded random generator, so a seed fixes the corpus.
"""
from __future__ import annotations

import os
import random
import re

# CTC vocabulary: index 0 is the blank; then space, apostrophe and the 26 letters.
BLANK = "<blank>"
VOCAB = [BLANK, " ", "'"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
CHAR_TO_ID = {c: i for i, c in enumerate(VOCAB)}

NOUNS = """time person year way day thing man world life hand part child eye woman place work week case
point number group problem fact river garden window table doctor teacher market city village mountain
forest ocean island kitchen bridge train station letter story song picture house school friend family
mother father brother sister dog cat horse bird fish apple bread water coffee music paper money road
street car boat plane student office country morning evening night winter summer spring autumn
question answer reason idea color voice heart door floor wall book computer phone light fire stone""".split()
ADJECTIVES = """good new first last long great little old big high different small large next early young
important few public bad same able red blue green yellow bright dark quiet loud happy sad warm cold
quick slow heavy light simple strange clean busy empty full gentle angry calm careful famous hungry
tired brave honest lazy proud rich poor soft hard wide narrow deep fresh sweet bitter""".split()
VERBS_PAST = """saw found took made gave told asked called moved opened closed painted carried watched
helped wanted needed liked loved followed finished started visited cleaned cooked bought sold built
wrote read heard brought left kept held met paid sent lost won caught taught fixed pushed pulled""".split()
VERBS_BASE = """see find take make give tell ask call move open close paint carry watch help want need
like love follow finish start visit clean cook buy sell build write read hear bring leave keep hold
meet pay send lose win catch teach fix push pull""".split()
ADVERBS = """quickly slowly quietly loudly carefully happily sadly suddenly often never always sometimes
again today yesterday tomorrow early late soon almost really""".split()
PREPOSITIONS = "in on under near behind beside above across through after before with without".split()
DETERMINERS = "the a this that every one my your his her our their".split()
NAMES = """anna david maria james sarah peter linda robert emma thomas laura michael grace daniel olivia
george alice henry sophie jack""".split()
CONTRACTIONS = "i'm you're we're they're it's don't can't won't isn't wasn't didn't i've we'll she's".split()

TEMPLATES = [
    "{det} {adj} {noun} {vpast} {det} {noun}",
    "{name} {vpast} {det} {noun} {prep} {det} {noun}",
    "{det} {noun} was {adj} and {adj}",
    "please {vbase} {det} {adj} {noun} {adv}",
    "{name} and {name} {vpast} {det} {noun} {adv}",
    "why did {det} {noun} {vbase} {det} {noun}",
    "{contr} sure {det} {noun} is {prep} {det} {noun}",
    "{det} {noun} {prep} {det} {noun} {vpast} {adv}",
    "we {vpast} {det} {adj} {noun} {prep} {det} {adj} {noun}",
    "the word {word} means {det} {adj} {noun}",
    "{name} {vpast} the {word} {prep} {det} {noun}",
    "{contr} {adj} because {det} {noun} {vpast} {det} {word}",
    "{adv} {det} {adj} {noun} {vpast}",
    "how many {noun}s did {name} {vbase} {adv}",
    "{det} {word} and {det} {word} are {adj}",
]

WORDLIST = "/usr/share/dict/words"
_WORD = re.compile(r"^[a-z]{3,10}$")


def system_words(path: str = WORDLIST) -> list[str]:
    """Plain lower-case words of 3-10 letters from the system word list (empty if it is missing)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", errors="ignore") as f:
        return sorted({w.strip() for w in f if _WORD.match(w.strip())})


def normalise(text: str) -> str:
    """Lower case, letters, apostrophes and single spaces: the characters the CTC head can emit."""
    text = re.sub(r"[^a-z' ]+", " ", text.lower())
    return re.sub(r" +", " ", text).strip()


def encode(text: str) -> list[int]:
    return [CHAR_TO_ID[c] for c in normalise(text)]


def sentence(rng: random.Random, words: list[str]) -> str:
    template = rng.choice(TEMPLATES)
    fill = {
        "det": lambda: rng.choice(DETERMINERS), "adj": lambda: rng.choice(ADJECTIVES),
        "noun": lambda: rng.choice(NOUNS), "vpast": lambda: rng.choice(VERBS_PAST),
        "vbase": lambda: rng.choice(VERBS_BASE), "adv": lambda: rng.choice(ADVERBS),
        "prep": lambda: rng.choice(PREPOSITIONS), "name": lambda: rng.choice(NAMES),
        "contr": lambda: rng.choice(CONTRACTIONS),
        "word": lambda: rng.choice(words) if words else rng.choice(NOUNS),
    }
    out = re.sub(r"\{(\w+)\}", lambda m: fill[m.group(1)](), template)
    return normalise(out)


def sentences(count: int, seed: int, words: list[str] | None = None) -> list[str]:
    """`count` distinct sentences, in a seeded order."""
    words = system_words() if words is None else words
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    attempts = 0
    while len(out) < count:
        attempts += 1
        if attempts > count * 50:
            raise RuntimeError(f"could not generate {count} distinct sentences")
        s = sentence(rng, words)
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out
