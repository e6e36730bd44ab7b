"""Pure spherical geometry: HEALPix indexing, regions, margins. No Spark, no I/O."""

from .healpix import (
    SPATIAL_INDEX_COLUMN,
    SPATIAL_INDEX_ORDER,
    pixel_to_index_range,
    radec_to_index,
    validate_radec,
)
from .regions import Box, Cone, Polygon, Region

__all__ = [
    "SPATIAL_INDEX_COLUMN",
    "SPATIAL_INDEX_ORDER",
    "Box",
    "Cone",
    "Polygon",
    "Region",
    "pixel_to_index_range",
    "radec_to_index",
    "validate_radec",
]
