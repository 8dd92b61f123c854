"""The words the catalog, the heads, the filters, the API and the UI share: one place for each name."""

from __future__ import annotations

# Columns the app filters on, in display order.
FILTER_COLUMNS = ("gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "usage")
ATTRIBUTE_COLUMNS = FILTER_COLUMNS + ("year", "productDisplayName")
# Attributes the heads predict, in the order a classification lists them.
HEAD_COLUMNS = ("articleType", "gender", "masterCategory", "subCategory", "baseColour", "usage")

ALL = "All"  # the filter value that means "no constraint"
ANY = ("", ALL, "all", "Any", None)  # every spelling of it a client may send

# The API's snake_case filter arguments and the catalog columns they constrain.
API_FILTERS = {
    "gender": "gender",
    "master_category": "masterCategory",
    "article_type": "articleType",
    "sub_category": "subCategory",
}

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
    unknown = set(values) - set(API_FILTERS)
    if unknown:
        raise TypeError(f"unknown filter arguments: {sorted(unknown)}")
    return {API_FILTERS[name]: value for name, value in values.items()}
