"""City configuration: districts, units (departments), request categories and their routing.

`load_city()` returns the shipped Luoyang config; see `luoyang.toml` for the file format.
"""

from .loader import DEFAULT_CITY_PATH, check_city_file, load_city, parse_city
from .model import (
    BBox,
    Category,
    City,
    CityConfigError,
    CityFile,
    CityInfo,
    Demo,
    District,
    Limits,
    Polygon,
    Route,
    Unit,
)

__all__ = [
    "DEFAULT_CITY_PATH",
    "BBox",
    "Category",
    "City",
    "CityConfigError",
    "CityFile",
    "CityInfo",
    "Demo",
    "District",
    "Limits",
    "Polygon",
    "Route",
    "Unit",
    "check_city_file",
    "load_city",
    "parse_city",
]
