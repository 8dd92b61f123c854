"""The JSON endpoints: the contract for gradio_client users and MCP clients (the same functions are the MCP
tools). Each is one function here; its filter arguments come from vocabulary.API_FILTERS.

Argument order is part of the contract (clients pass arguments by position): each endpoint names its order
as it was published, and a filter added to the vocabulary later joins every endpoint at the end, with
"All" as its default, so existing clients keep working."""

from __future__ import annotations

import inspect
import typing
from typing import Callable, NamedTuple

import gradio as gr
from gradio.data_classes import FileData

from ... import vocabulary
from ...vocabulary import ALL, TITLES
from ..service import Service
from .guards import guarded, image_argument
from .present import served

IMAGE_DOC = "the photo: an uploaded file (JPEG, PNG, WebP, GIF, AVIF or HEIC), an http(s) URL or a catalog product id."
K_DOC = "how many results, 1 to 100."


class Endpoint(NamedTuple):
    """`fn(service, its own arguments, **filters)`, published under its name with arguments in `order`."""

    fn: Callable[..., dict]
    order: tuple[str, ...]


def recommend_image(service: Service, image: FileData, k: int = 12, text: str = "", **filter_values: str) -> dict:
    """Classification and the k most similar catalog items for a photo, optionally changed by words.

    Args:
        image: {IMAGE_DOC}
        k: {K_DOC}
        text: optional words that change what is searched for, e.g. "in black" or "for women".
    """
    return served(service.recommend(image_argument(image, service), k, text, **filter_values)[0])


def recommend_url(service: Service, url: str, k: int = 12, text: str = "", **filter_values: str) -> dict:
    """Like recommend_image, for a public http(s) image URL fetched by the server.

    Args:
        url: the photo's http(s) address.
        k: {K_DOC}
        text: optional words that change what is searched for, e.g. "in black" or "for women".
    """
    return served(service.recommend(service.fetch_url(url), k, text, **filter_values)[0])


def recommend_text(service: Service, text: str, k: int = 12, **filter_values: str) -> dict:
    """The k catalog items that best fit a description in words, e.g. "navy polo for men".

    Args:
        text: what the shopper is looking for, in English.
        k: {K_DOC}
    """
    return served(service.recommend_text(text, k, **filter_values)[0])


def similar_item(service: Service, item_id: int, k: int = 12, **filter_values: str) -> dict:
    """The k catalog items most similar to catalog item `item_id` (itself excluded).

    Args:
        item_id: a catalog product id, e.g. one from a previous answer.
        k: {K_DOC}
    """
    return served(service.similar_item(item_id, k, **filter_values))


def classify(service: Service, image: FileData) -> dict:
    """Per attribute, the top-3 labels with confidences.

    Args:
        image: {IMAGE_DOC}
    """
    return service.classify(image_argument(image, service))


def browse(service: Service, page: int = 1, page_size: int = 12, **filter_values: str) -> dict:
    """The filtered catalog in id order, one page at a time, with the total count.

    Args:
        page: which page, from 1.
        page_size: products a page, 1 to 100.
    """
    return served(service.browse(page, page_size, **filter_values))


_FILTERED = ("gender", "master_category", "article_type", "sub_category")
ENDPOINTS = (
    Endpoint(recommend_image, ("image", "k", *_FILTERED, "text")),
    Endpoint(recommend_url, ("url", "k", *_FILTERED, "text")),
    Endpoint(recommend_text, ("text", "k", *_FILTERED)),
    Endpoint(similar_item, ("item_id", "k", *_FILTERED)),
    Endpoint(classify, ("image",)),
    Endpoint(browse, ("gender", "master_category", "article_type", "page", "page_size", "sub_category")),
)


def filter_doc(name: str) -> str:
    f = next(f for f in vocabulary.API_FILTERS if f.name == name)
    example = f', e.g. "{f.example}"' if f.example else ""
    return f'only items of this {TITLES[f.column].lower()}{example} ("{ALL}" for any).'


def published(endpoint: Endpoint, service: Service) -> Callable[..., dict]:
    """The endpoint as Gradio publishes it: its arguments in order (filters the function takes as
    **filter_values), typed and documented, bound to `service`."""
    fn = endpoint.fn
    own = dict(list(inspect.signature(fn).parameters.items())[1:])  # without `service`
    filters = {f.name for f in vocabulary.API_FILTERS} if "filter_values" in own else set()
    hints = typing.get_type_hints(fn)
    order = [
        *endpoint.order,
        *(f.name for f in vocabulary.API_FILTERS if f.name in filters and f.name not in endpoint.order),
    ]
    parameters = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=ALL, annotation=str)
        if name in filters
        else own[name].replace(annotation=hints[name])
        for name in order
    ]
    signature = inspect.Signature(parameters, return_annotation=dict)
    docs = (fn.__doc__ or "").format(IMAGE_DOC=IMAGE_DOC, K_DOC=K_DOC).rstrip()
    docs += "".join(f"\n        {name}: {filter_doc(name)}" for name in order if name in filters) + "\n"

    def call(*args, **kwargs) -> dict:
        arguments = signature.bind(*args, **kwargs)
        arguments.apply_defaults()
        values = dict(arguments.arguments)
        filter_values = {name: values.pop(name) for name in list(values) if name in filters}
        return fn(service, **values, **filter_values)

    call.__name__ = call.__qualname__ = fn.__name__
    call.__doc__ = inspect.cleandoc(docs)
    call.__signature__ = signature  # type: ignore[attr-defined]
    call.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": dict}
    return call


def register(service: Service) -> None:
    """Publish every endpoint in the Blocks being built."""
    for endpoint in ENDPOINTS:
        gr.api(guarded(published(endpoint, service)), api_name=endpoint.fn.__name__)
