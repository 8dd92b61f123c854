"""Search by words, measured: queries in the words shoppers use (generated from held-out products, and
written by hand), a keyword baseline (BM25 over the same catalog text) on the same queries, and photo +
words (a held-out photo with a colour or gender word that differs from the product's own).

The shoppers' vocabulary here is the evaluation's own, written from how people search, not read off
`words.SYNONYMS`; the report also gives the text model alone (no constraints) beside the product's ranking."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

from .hnsw import top_k
from .images import load_image
from .words import catalog_text, tokens

if TYPE_CHECKING:
    from .serve.recommender import Recommender

# How shoppers name a product type, and which catalog types each such word fits.
SHOPPER_TYPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sneakers", ("Casual Shoes", "Sports Shoes")),
    ("trainers", ("Sports Shoes", "Casual Shoes")),
    ("running shoes", ("Sports Shoes",)),
    ("dress shoes", ("Formal Shoes",)),
    ("oxfords", ("Formal Shoes",)),
    ("high heels", ("Heels",)),
    ("pumps", ("Heels",)),
    ("ballet flats", ("Flats",)),
    ("flip-flops", ("Flip Flops",)),
    ("sliders", ("Flip Flops",)),
    ("sandals", ("Sandals", "Sports Sandals")),
    ("purse", ("Handbags", "Clutches", "Wallets")),
    ("handbag", ("Handbags",)),
    ("tote", ("Handbags",)),
    ("clutch", ("Clutches",)),
    ("rucksack", ("Backpacks", "Rucksacks")),
    ("backpack", ("Backpacks", "Rucksacks")),
    ("wallet", ("Wallets",)),
    ("shades", ("Sunglasses",)),
    ("sunnies", ("Sunglasses",)),
    ("tee", ("Tshirts",)),
    ("t-shirt", ("Tshirts",)),
    ("polo", ("Tshirts",)),
    ("hoodie", ("Sweatshirts",)),
    ("pullover", ("Sweaters",)),
    ("jumper", ("Sweaters",)),
    ("cardigan", ("Sweaters",)),
    ("blouse", ("Tops",)),
    ("top", ("Tops",)),
    ("button-down shirt", ("Shirts",)),
    ("shirt", ("Shirts",)),
    ("chinos", ("Trousers",)),
    ("slacks", ("Trousers",)),
    ("joggers", ("Track Pants",)),
    ("sweatpants", ("Track Pants",)),
    ("jeans", ("Jeans",)),
    ("denims", ("Jeans",)),
    ("shorts", ("Shorts",)),
    ("dress", ("Dresses",)),
    ("skirt", ("Skirts",)),
    ("jacket", ("Jackets",)),
    ("watch", ("Watches",)),
    ("wristwatch", ("Watches",)),
    ("cap", ("Caps",)),
    ("baseball cap", ("Caps",)),
    ("belt", ("Belts",)),
    ("tie", ("Ties",)),
    ("socks", ("Socks",)),
    ("briefs", ("Briefs",)),
    ("undershirt", ("Innerwear Vests",)),
    ("kurta", ("Kurtas",)),
    ("kurti", ("Kurtis",)),
    ("scarf", ("Scarves", "Mufflers", "Stoles")),
    ("leggings", ("Leggings",)),
)
SHOPPER_GENDERS: Mapping[str, tuple[tuple[str, bool], ...]] = {  # (words, whether they go after the type)
    "Men": (("men's", False), ("mens", False), ("for men", True), ("for him", True), ("guys", False)),
    "Women": (("women's", False), ("ladies", False), ("for women", True), ("for her", True), ("womens", False)),
    "Boys": (("boys'", False), ("for boys", True)),
    "Girls": (("girls'", False), ("for girls", True)),
}
SHOPPER_COLOURS: Mapping[str, tuple[str, ...]] = {
    "Black": ("black",),
    "White": ("white",),
    "Blue": ("blue",),
    "Navy Blue": ("navy", "navy blue"),
    "Grey": ("grey", "gray"),
    "Brown": ("brown",),
    "Red": ("red",),
    "Green": ("green",),
    "Purple": ("purple",),
    "Pink": ("pink",),
    "Beige": ("beige",),
    "Maroon": ("maroon",),
    "Yellow": ("yellow",),
    "Olive": ("olive",),
    "Silver": ("silver",),
    "Orange": ("orange",),
    "Cream": ("cream",),
    "Gold": ("gold", "golden"),
    "Tan": ("tan",),
    "Charcoal": ("charcoal",),
    "Khaki": ("khaki",),
    "Off White": ("off-white",),
}


@dataclass
class TextQuery:
    text: str
    wanted: dict[str, tuple[str, ...]]  # per stated attribute, the catalog labels that satisfy it


# Written by hand, the way people type into a shop's search box; each with the attributes it states.
HANDWRITTEN: tuple[TextQuery, ...] = tuple(
    TextQuery(text, {k: tuple(v) if isinstance(v, (list, tuple)) else (v,) for k, v in wanted.items()})
    for text, wanted in (
        ("navy polo for men", {"gender": "Men", "baseColour": "Navy Blue", "articleType": "Tshirts"}),
        ("red heels", {"baseColour": "Red", "articleType": "Heels"}),
        ("black leather wallet for men", {"gender": "Men", "baseColour": "Black", "articleType": "Wallets"}),
        (
            "white sneakers for women",
            {"gender": "Women", "baseColour": "White", "articleType": ["Casual Shoes", "Sports Shoes"]},
        ),
        ("women's sunglasses", {"gender": "Women", "articleType": "Sunglasses"}),
        ("blue jeans for men", {"gender": "Men", "baseColour": "Blue", "articleType": "Jeans"}),
        ("grey hoodie", {"baseColour": "Grey", "articleType": "Sweatshirts"}),
        ("black purse", {"baseColour": "Black", "articleType": ["Handbags", "Clutches", "Wallets"]}),
        ("brown belt for men", {"gender": "Men", "baseColour": "Brown", "articleType": "Belts"}),
        ("men's running shoes", {"gender": "Men", "articleType": "Sports Shoes"}),
        ("ladies black handbag", {"gender": "Women", "baseColour": "Black", "articleType": "Handbags"}),
        ("white shirt for office", {"baseColour": "White", "articleType": "Shirts", "usage": "Formal"}),
        ("pink top for women", {"gender": "Women", "baseColour": "Pink", "articleType": "Tops"}),
        ("men's black formal shoes", {"gender": "Men", "baseColour": "Black", "articleType": "Formal Shoes"}),
        ("silver watch for women", {"gender": "Women", "baseColour": "Silver", "articleType": "Watches"}),
        ("black analog watch for men", {"gender": "Men", "baseColour": "Black", "articleType": "Watches"}),
        ("green t-shirt", {"baseColour": "Green", "articleType": "Tshirts"}),
        ("red tee for guys", {"gender": "Men", "baseColour": "Red", "articleType": "Tshirts"}),
        ("women's flip-flops", {"gender": "Women", "articleType": "Flip Flops"}),
        ("black backpack", {"baseColour": "Black", "articleType": ["Backpacks", "Rucksacks"]}),
        ("aviator shades for men", {"gender": "Men", "articleType": "Sunglasses"}),
        ("navy blue chinos", {"baseColour": "Navy Blue", "articleType": "Trousers"}),
        ("grey joggers for men", {"gender": "Men", "baseColour": "Grey", "articleType": "Track Pants"}),
        ("maroon kurta for women", {"gender": "Women", "baseColour": "Maroon", "articleType": ["Kurtas", "Kurtis"]}),
        ("blue kurta for women", {"gender": "Women", "baseColour": "Blue", "articleType": ["Kurtas", "Kurtis"]}),
        ("women's dress", {"gender": "Women", "articleType": "Dresses"}),
        (
            "brown sandals for men",
            {"gender": "Men", "baseColour": "Brown", "articleType": ["Sandals", "Sports Sandals"]},
        ),
        ("women's black flats", {"gender": "Women", "baseColour": "Black", "articleType": "Flats"}),
        ("blue denim jacket", {"baseColour": "Blue", "articleType": "Jackets"}),
        ("black jacket for men", {"gender": "Men", "baseColour": "Black", "articleType": "Jackets"}),
        ("striped shirt for men", {"gender": "Men", "articleType": "Shirts"}),
        ("checked shirt in blue", {"baseColour": "Blue", "articleType": "Shirts"}),
        ("white socks", {"baseColour": "White", "articleType": "Socks"}),
        ("men's briefs", {"gender": "Men", "articleType": "Briefs"}),
        ("purple top", {"baseColour": "Purple", "articleType": "Tops"}),
        ("women's yellow top", {"gender": "Women", "baseColour": "Yellow", "articleType": ["Tops", "Tshirts"]}),
        ("black sports shoes", {"baseColour": "Black", "articleType": "Sports Shoes"}),
        ("gray sweater for men", {"gender": "Men", "baseColour": "Grey", "articleType": "Sweaters"}),
        ("navy jumper", {"baseColour": "Navy Blue", "articleType": "Sweaters"}),
        ("women's brown handbag", {"gender": "Women", "baseColour": "Brown", "articleType": "Handbags"}),
        ("black cap", {"baseColour": "Black", "articleType": "Caps"}),
        ("black socks for men", {"gender": "Men", "baseColour": "Black", "articleType": "Socks"}),
        ("white trainers", {"baseColour": "White", "articleType": ["Sports Shoes", "Casual Shoes"]}),
        ("men's casual shoes in brown", {"gender": "Men", "baseColour": "Brown", "articleType": "Casual Shoes"}),
        ("gold heels", {"baseColour": "Gold", "articleType": "Heels"}),
        ("ladies watch", {"gender": "Women", "articleType": "Watches"}),
        ("black shorts for men", {"gender": "Men", "baseColour": "Black", "articleType": "Shorts"}),
        ("blue shirt for men", {"gender": "Men", "baseColour": "Blue", "articleType": "Shirts"}),
        ("red sweater", {"baseColour": "Red", "articleType": "Sweaters"}),
        ("brown wallet", {"baseColour": "Brown", "articleType": "Wallets"}),
        ("women's white tee", {"gender": "Women", "baseColour": "White", "articleType": "Tshirts"}),
        ("blue flip flops for men", {"gender": "Men", "baseColour": "Blue", "articleType": "Flip Flops"}),
        (
            "something warm for winter, men, grey",
            {"gender": "Men", "baseColour": "Grey", "articleType": ["Sweaters", "Sweatshirts", "Jackets"]},
        ),
        ("a purse like this but in black", {"baseColour": "Black", "articleType": ["Handbags", "Clutches", "Wallets"]}),
        ("pink handbag", {"baseColour": "Pink", "articleType": "Handbags"}),
    )
)


def generated_queries(rec: Recommender, rows: np.ndarray, n: int, seed: int = 0) -> list[TextQuery]:
    """Queries for up to `n` held-out products, in shoppers' words: gender (unless unisex), colour and
    type, in a few orders ("women's black purse", "tee in navy for him")."""
    rng = random.Random(seed)
    columns = rec.metadata.columns
    out = []
    for row in rng.sample(list(rows), len(rows)):
        kind, colour, gender = (str(columns[c][row]) for c in ("articleType", "baseColour", "gender"))
        types = [(word, accepted) for word, accepted in SHOPPER_TYPES if kind in accepted]
        if not types or colour not in SHOPPER_COLOURS:
            continue
        word, accepted = rng.choice(types)
        colour_word = rng.choice(SHOPPER_COLOURS[colour])
        wanted = {"articleType": accepted, "baseColour": (colour,)}
        gender_words = SHOPPER_GENDERS.get(gender)
        form = rng.randrange(3)
        if gender_words is None:  # unisex: no gender word
            text = f"{colour_word} {word}" if form else f"{word} in {colour_word}"
        else:
            wanted["gender"] = (gender,)
            gender_word, after = rng.choice(gender_words)
            if form == 2:
                text = f"{word} in {colour_word} {gender_word}" if after else f"{gender_word} {word} in {colour_word}"
            else:
                text = f"{colour_word} {word} {gender_word}" if after else f"{gender_word} {colour_word} {word}"
        out.append(TextQuery(text, wanted))
        if len(out) == n:
            break
    return out


def ceiling(rec: Recommender, queries: list[TextQuery], k: int = 10) -> float:
    """The best P@k for all stated attributes any ranking could reach: some queries fit fewer than k products."""
    columns = rec.metadata.columns
    best = []
    for query in queries:
        fits = np.ones(len(rec.metadata), bool)
        for column, accepted in query.wanted.items():
            fits &= np.isin(columns[column].astype(str), accepted)
        best.append(min(k, int(fits.sum())) / k)
    return round(float(np.mean(best)), 4)


def precision_report(rec: Recommender, queries: list[TextQuery], ranked: list[np.ndarray], k: int = 10) -> dict:
    """P@k per stated attribute and for all stated attributes together."""
    columns = rec.metadata.columns
    per: dict[str, list[float]] = {}
    together = []
    for query, rows in zip(queries, ranked):
        rows = rows[:k]
        ok_all = np.ones(len(rows), bool)
        for column, accepted in query.wanted.items():
            ok = np.isin(columns[column][rows].astype(str), accepted)
            per.setdefault(column, []).append(float(ok.sum()) / k)
            ok_all &= ok
        together.append(float(ok_all.sum()) / k)
    return {"queries": len(queries), "P@10_all": round(float(np.mean(together)), 4)} | {
        f"P@10_{c}": round(float(np.mean(v)), 4) for c, v in sorted(per.items())
    }


class BM25:
    """Okapi BM25 (k1 1.2, b 0.75) over the same catalog text and the same word stemming."""

    def __init__(self, documents: list[list[str]], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.lengths = np.array([len(d) for d in documents], np.float32)
        self.postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        counts: dict[str, tuple[list[int], list[int]]] = {}
        for row, doc in enumerate(documents):
            for term, tf in Counter(doc).items():
                rows_, tfs = counts.setdefault(term, ([], []))
                rows_.append(row)
                tfs.append(tf)
        for term, (rows_, tfs) in counts.items():
            self.postings[term] = (np.array(rows_), np.array(tfs, np.float32))
        self.n, self.mean_length = len(documents), float(self.lengths.mean()) if documents else 1.0

    def scores(self, query: list[str]) -> np.ndarray:
        total = np.zeros(self.n, np.float32)
        for term in set(query):
            if term not in self.postings:
                continue
            rows, tf = self.postings[term]
            idf = math.log(1 + (self.n - len(rows) + 0.5) / (len(rows) + 0.5))
            norm = tf + self.k1 * (1 - self.b + self.b * self.lengths[rows] / self.mean_length)
            total[rows] += idf * tf * (self.k1 + 1) / norm
        return total


def rankings(rec: Recommender, queries: list[TextQuery], k: int = 10) -> dict[str, list[np.ndarray]]:
    """Each query's top-k rows by the product's text search, by the text model alone and by BM25."""
    texts = [catalog_text(rec.metadata.attributes(r)) for r in range(len(rec.metadata))]
    bm25 = BM25([tokens(t) for t in texts])
    vectors = rec.text_encoder.encode([q.text for q in queries])
    out: dict[str, list[np.ndarray]] = {"product": [], "text_model_only": [], "bm25": []}
    for query, vector in zip(queries, vectors):
        out["product"].append(np.array([rec.row_of(m.id) for m in rec.search_text(query.text, k)]))
        out["text_model_only"].append(top_k(rec.text_index.similarity(vector), k))
        out["bm25"].append(top_k(bm25.scores(tokens(query.text)), k))
    return out


def photo_plus_words(
    rec: Recommender, rows: np.ndarray, photos: Path | None, n: int = 200, seed: int = 0, k: int = 10
) -> dict:
    """Held-out photos with a colour word ("in red") or gender word ("for women") other than the
    product's own: P@10 of results that keep the photo's article type and take the asked colour or
    gender, against the photo alone."""
    rng = random.Random(seed)
    columns = rec.metadata.columns
    features = None
    chosen = [r for r in rng.sample(list(rows), len(rows)) if str(columns["baseColour"][r]) in SHOPPER_COLOURS][:n]
    results: dict[str, dict[str, list[float]]] = {"colour": {}, "gender": {}}
    common = ("Black", "White", "Blue", "Red", "Green", "Grey", "Pink", "Brown", "Navy Blue", "Yellow")
    for i, row in enumerate(chosen):
        item_id = int(rec.metadata.ids[row])
        photo = photos / "images" / f"{item_id}.jpg" if photos else None
        if photo is not None and photo.is_file():
            query = rec.query(load_image(photo))
        else:
            if features is None:
                from . import artifacts

                features = np.load(rec.folder / artifacts.FEATURES, mmap_mode="r")
            query = rec.query_of(np.asarray(features[row], np.float32))
        kind, colour, gender = (str(columns[c][row]) for c in ("articleType", "baseColour", "gender"))
        if i % 2 == 0:
            asked = rng.choice([c for c in common if c != colour])
            column, words = "baseColour", f"in {rng.choice(SHOPPER_COLOURS[asked])}"
        else:
            if gender not in ("Men", "Women"):
                continue
            asked = "Women" if gender == "Men" else "Men"
            column, words = "gender", "for women" if asked == "Women" else "for men"

        def hit_rate(matches) -> float:
            hits = [m.attributes["articleType"] == kind and m.attributes[column] == asked for m in matches[:k]]
            return sum(hits) / k

        label = "colour" if column == "baseColour" else "gender"
        results[label].setdefault("words", []).append(hit_rate(rec.search_query(query, k, text=words)))
        results[label].setdefault("photo_only", []).append(hit_rate(rec.search_query(query, k)))
    report = {}
    for label, variants in results.items():
        report[label] = {name: round(float(np.mean(v)), 4) for name, v in variants.items()} | {
            "queries": len(variants.get("words", []))
        }
    both = results["colour"].get("words", []) + results["gender"].get("words", [])
    report["P@10"] = round(float(np.mean(both)), 4) if both else float("nan")
    return report


def text_report(
    rec: Recommender,
    rows: np.ndarray,
    photos: Path | None,
    generated: int = 500,
    photo_queries: int = 200,
    timer: Callable[[], float] | None = None,
) -> dict:
    """The `text` section of report.json."""
    report: dict = {}
    for name, queries in (
        ("everyday", generated_queries(rec, rows, generated)),
        ("handwritten", list(HANDWRITTEN)),
    ):
        ranked = rankings(rec, queries)
        report[name] = {method: precision_report(rec, queries, r) for method, r in ranked.items()}
        report[name]["P@10_all_ceiling"] = ceiling(rec, queries)
    report["P@10_all"] = report["everyday"]["product"]["P@10_all"]
    report["P@10_all_bm25"] = report["everyday"]["bm25"]["P@10_all"]
    report["photo_plus_words"] = photo_plus_words(rec, rows, photos, photo_queries)
    return report
