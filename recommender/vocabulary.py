"""The words the catalog, the heads, the filters, the API and the UI share: one place for each name."""

from __future__ import annotations

from typing import NamedTuple

# Columns the app filters on, in display order.
FILTER_COLUMNS = ("gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "usage")
ATTRIBUTE_COLUMNS = FILTER_COLUMNS + ("year", "productDisplayName")
# Attributes the heads predict, in the order a classification lists them.
HEAD_COLUMNS = ("articleType", "gender", "masterCategory", "subCategory", "baseColour", "usage")

ALL = "All"  # the filter value that means "no constraint"
ANY = ("", ALL, "all", "Any", None)  # every spelling of it a client may send


class ApiFilter(NamedTuple):
    """A filter the API and the page offer: its argument name, the catalog column it constrains, an example
    value for the API docs, and the filters whose choice narrows its choices (the dropdowns cascade)."""

    name: str
    column: str
    example: str = ""
    narrowed_by: tuple[str, ...] = ()


# The filters, in the order they joined the API: clients pass them by position, so a new one only ever
# goes last. A new filter is one line here: every endpoint takes it, every search page shows it.
API_FILTERS = (
    ApiFilter("gender", "gender"),
    ApiFilter("master_category", "masterCategory", "Apparel"),
    ApiFilter("article_type", "articleType", "Tshirts", ("masterCategory", "subCategory")),
    ApiFilter("sub_category", "subCategory", "Topwear", ("masterCategory",)),
)

# The catalog's make-up as the Explore tab charts it.
INSIGHT_COLUMNS = ("gender", "masterCategory", "subCategory", "articleType", "baseColour", "usage", "season", "year")

# What a shopper reads for each column.
TITLES = {
    "gender": "Gender",
    "masterCategory": "Category",
    "subCategory": "Sub-category",
    "articleType": "Article type",
    "baseColour": "Colour",
    "usage": "Usage",
    "season": "Season",
    "year": "Year",
}


def filters_from_api(**values: str) -> dict[str, str]:
    """API filter arguments (gender=..., master_category=...) as catalog-column filters."""
    columns = {f.name: f.column for f in API_FILTERS}
    unknown = set(values) - set(columns)
    if unknown:
        raise TypeError(f"unknown filter arguments: {sorted(unknown)}")
    return {columns[name]: value for name, value in values.items()}
