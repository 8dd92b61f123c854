"""Words: the text a catalog product is described by, and what a shopper's words ask for.

A shopper writes "trainers", "purse" or "for her"; the catalog says "Sports Shoes", "Handbags" and
"Women". `understand` finds the gender, colour, article type and usage a query names (the catalog's own
labels, in any case and number, plus the everyday words below); the search treats them as constraints
and the text model scores the rest."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from .errors import UserError

MAX_QUERY_CHARS = 2000
# Columns a query's words can constrain, in the order a shopper reads them back.
WORD_COLUMNS = ("gender", "baseColour", "articleType", "usage")

# Everyday words -> catalog labels. Each catalog label is also understood as itself (singular or plural).
SYNONYMS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "gender": {
        "men": ("Men",),
        "man": ("Men",),
        "male": ("Men",),
        "gents": ("Men",),
        "gent": ("Men",),
        "guy": ("Men",),
        "him": ("Men",),
        "his": ("Men",),
        "women": ("Women",),
        "woman": ("Women",),
        "female": ("Women",),
        "ladies": ("Women",),
        "lady": ("Women",),
        "her": ("Women",),
        "boy": ("Boys",),
        "girl": ("Girls",),
        "kid": ("Boys", "Girls"),
        "child": ("Boys", "Girls"),
        "children": ("Boys", "Girls"),
        "unisex": ("Unisex",),
    },
    "baseColour": {
        "navy": ("Navy Blue",),
        "gray": ("Grey",),
        "golden": ("Gold",),
        "scarlet": ("Red",),
        "crimson": ("Red",),
        "wine": ("Maroon", "Burgundy"),
        "ivory": ("Off White", "Cream"),
        "camel": ("Tan", "Beige"),
        "violet": ("Purple",),
        "aqua": ("Turquoise Blue", "Teal"),
        "multicolour": ("Multi",),
        "multicolor": ("Multi",),
        "multicoloured": ("Multi",),
        "multicolored": ("Multi",),
        "colourful": ("Multi",),
    },
    "articleType": {
        "sneaker": ("Casual Shoes", "Sports Shoes"),
        "trainer": ("Sports Shoes", "Casual Shoes"),
        "running shoe": ("Sports Shoes",),
        "runner": ("Sports Shoes",),
        "loafer": ("Casual Shoes", "Formal Shoes"),
        "oxford": ("Formal Shoes",),
        "brogue": ("Formal Shoes",),
        "dress shoe": ("Formal Shoes",),
        "pump": ("Heels",),
        "stiletto": ("Heels",),
        "high heel": ("Heels",),
        "wedge": ("Heels",),
        "ballerina": ("Flats",),
        "ballet flat": ("Flats",),
        "flip flop": ("Flip Flops",),
        "flipflop": ("Flip Flops",),
        "thong": ("Flip Flops",),
        "slipper": ("Flip Flops",),
        "slider": ("Flip Flops",),
        "slide": ("Flip Flops",),
        "chappal": ("Flip Flops", "Sandals"),
        "sandal": ("Sandals", "Sports Sandals"),
        "purse": ("Handbags", "Clutches", "Wallets"),
        "handbag": ("Handbags",),
        "tote": ("Handbags",),
        "shoulder bag": ("Handbags",),
        "clutch": ("Clutches",),
        "rucksack": ("Backpacks", "Rucksacks"),
        "backpack": ("Backpacks", "Rucksacks"),
        "school bag": ("Backpacks",),
        "laptop bag": ("Laptop Bag",),
        "gym bag": ("Duffel Bag",),
        "duffel": ("Duffel Bag",),
        "duffle": ("Duffel Bag",),
        "billfold": ("Wallets",),
        "shade": ("Sunglasses",),
        "sunnies": ("Sunglasses",),
        "sunglass": ("Sunglasses",),
        "tee": ("Tshirts",),
        "t shirt": ("Tshirts",),
        "tshirt": ("Tshirts",),
        "polo": ("Tshirts",),
        "hoodie": ("Sweatshirts",),
        "hoody": ("Sweatshirts",),
        "sweatshirt": ("Sweatshirts",),
        "pullover": ("Sweaters",),
        "jumper": ("Sweaters",),
        "cardigan": ("Sweaters",),
        "sweater": ("Sweaters",),
        "blouse": ("Tops",),
        "top": ("Tops",),
        "tank top": ("Tops",),
        "button down": ("Shirts",),
        "chino": ("Trousers",),
        "pant": ("Trousers", "Track Pants"),
        "slack": ("Trousers",),
        "jogger": ("Track Pants",),
        "trackpant": ("Track Pants",),
        "sweatpant": ("Track Pants",),
        "denim": ("Jeans",),
        "jean": ("Jeans",),
        "frock": ("Dresses",),
        "gown": ("Dresses",),
        "coat": ("Jackets",),
        "windcheater": ("Jackets",),
        "blazer": ("Blazers",),
        "watch": ("Watches",),
        "timepiece": ("Watches",),
        "wristwatch": ("Watches",),
        "cap": ("Caps",),
        "baseball cap": ("Caps",),
        "beanie": ("Caps",),
        "hat": ("Hat", "Caps"),
        "scarf": ("Scarves", "Mufflers", "Stoles"),
        "muffler": ("Mufflers",),
        "stole": ("Stoles",),
        "tie": ("Ties",),
        "necktie": ("Ties",),
        "underwear": ("Briefs", "Trunk", "Boxers", "Bra", "Innerwear Vests"),
        "brief": ("Briefs",),
        "trunk": ("Trunk",),
        "boxer": ("Boxers",),
        "vest": ("Innerwear Vests",),
        "undershirt": ("Innerwear Vests",),
        "bra": ("Bra",),
        "legging": ("Leggings",),
        "tight": ("Tights", "Stockings"),
        "stocking": ("Stockings",),
        "sock": ("Socks",),
        "perfume": ("Perfume and Body Mist",),
        "fragrance": ("Perfume and Body Mist", "Fragrance Gift Set"),
        "deo": ("Deodorant",),
        "deodorant": ("Deodorant",),
        "kurti": ("Kurtis",),
        "kurta": ("Kurtas",),
        "belt": ("Belts",),
    },
    "usage": {
        "formal": ("Formal",),
        "office": ("Formal",),
        "casual": ("Casual",),
        "everyday": ("Casual",),
        "sport": ("Sports",),
        "sporty": ("Sports",),
        "gym": ("Sports",),
        "workout": ("Sports",),
        "training": ("Sports",),
        "ethnic": ("Ethnic",),
        "traditional": ("Ethnic",),
        "festive": ("Ethnic",),
    },
}
NEGATIONS = {"not", "no", "without", "except", "non"}
# How much a part-match of a constraint counts (a unisex item for "men's", one label of a broad word).
UNISEX_CREDIT = 0.5


def stem(word: str) -> str:
    """Singular of an English plural, as far as catalog words need it (shoes, dresses, watches, accessories)."""
    if len(word) <= 3 or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "ches", "shes", "xes")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


def tokens(text: str) -> list[str]:
    """Lower-case stemmed words: "Men's T-Shirts" -> ["men", "t", "shirt"]."""
    text = unicodedata.normalize("NFKC", text).lower().replace("'s", " ").replace("’s", " ")
    return [stem(w) for w in re.findall(r"[^\W_]+", text)]


def clean_query(text: object) -> str:
    """The shopper's words, checked: one sentence for what cannot be searched."""
    if text is None or not isinstance(text, str):
        raise UserError('Describe what you are looking for in words, e.g. "navy polo for men".')
    if len(text) > MAX_QUERY_CHARS:  # before any work character by character: a 10 MB text is refused at once
        raise UserError(
            f"The description is {len(text):,} characters long; "
            f"keep it under {MAX_QUERY_CHARS:,} (a few words do best)."
        )
    text = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)  # control characters
    text = " ".join(text.split())
    if not text:
        raise UserError('The description is empty; describe what you are looking for, e.g. "red heels".')
    if not re.search(r"[^\W_]", text):
        raise UserError("The description has no words in it (only symbols or emoji); describe the item in words.")
    if not re.search(r"[A-Za-z]", unicodedata.normalize("NFKD", text)):
        raise UserError(
            'The search reads descriptions in English (Latin letters); describe the item in English, e.g. "red heels".'
        )
    return text


def catalog_text(attributes: Mapping[str, str]) -> str:
    """What the text model reads for a product: its name, then the labels a shopper might ask for."""
    labels = [attributes.get(c, "") for c in ("gender", "baseColour", "articleType", "usage")]
    return f"{attributes.get('productDisplayName', '')}. " + " ".join(label for label in labels if label)


@dataclass
class Understood:
    """What a query's words ask for: per column, accepted labels with their credit (1 = exactly this)."""

    wanted: dict[str, dict[str, float]] = field(default_factory=dict)
    unwanted: dict[str, set[str]] = field(default_factory=dict)

    def describe(self) -> str:
        """For the shopper: "gender Women · colour Red · not Black"."""
        from .vocabulary import TITLES

        named = self.named()
        parts = [f"{TITLES.get(c, c).lower()} {' or '.join(named[c])}" for c in WORD_COLUMNS if c in named]
        parts += [f"not {' or '.join(sorted(v))}" for v in self.unwanted.values()]
        return " · ".join(parts)

    def named(self) -> dict[str, list[str]]:
        """Per column, the labels the words name exactly (not the part-credit ones)."""
        return {c: [label for label, v in credit.items() if v == 1.0] for c, credit in self.wanted.items()}

    def __bool__(self) -> bool:
        return bool(self.wanted or self.unwanted)


class Vocabulary:
    """Phrases (stemmed word tuples) -> (column, labels), built from a catalog's labels and SYNONYMS."""

    def __init__(self, labels: Mapping[str, Iterable[str]]) -> None:
        self.phrases: dict[tuple[str, ...], tuple[str, tuple[str, ...]]] = {}
        for column in WORD_COLUMNS:
            known = {str(label) for label in labels.get(column, ()) if label}
            for label in sorted(known):
                self.phrases.setdefault(tuple(tokens(label)), (column, (label,)))
            for word, targets in SYNONYMS.get(column, {}).items():
                phrase = tuple(tokens(word))
                present = tuple(t for t in targets if t in known)
                if phrase in self.phrases and self.phrases[phrase][0] == column:  # "rucksack": the label and more
                    present = tuple(dict.fromkeys(self.phrases[phrase][1] + present))
                if present:
                    self.phrases[phrase] = (column, present)
        self.longest = max((len(p) for p in self.phrases), default=1)

    def understand(self, text: str) -> Understood:
        """Longest phrases first, left to right; a colour or type after "not"/"without" is unwanted."""
        words, found = tokens(text), Understood()
        i = 0
        while i < len(words):
            for n in range(min(self.longest, len(words) - i), 0, -1):
                hit = self.phrases.get(tuple(words[i : i + n]))
                if hit is None:
                    continue
                column, labels = hit
                negated = i > 0 and words[i - 1] in NEGATIONS
                if negated and column != "gender":
                    found.unwanted.setdefault(column, set()).update(labels)
                elif not negated:
                    wanted = found.wanted.setdefault(column, {})
                    wanted.update({label: 1.0 for label in labels})
                    if column == "gender" and "Unisex" not in wanted:
                        wanted["Unisex"] = UNISEX_CREDIT
                i += n
                break
            else:
                i += 1
        return found
