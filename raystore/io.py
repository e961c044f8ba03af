"""Public `raystore.io`: the IO descriptors of service APIs."""

from raystore._private.service.descriptors import (
    JSON,
    File,
    Image,
    IODescriptor,
    Multipart,
    NumpyNdarray,
    PandasDataFrame,
    Text,
)

__all__ = ["JSON", "File", "IODescriptor", "Image", "Multipart", "NumpyNdarray", "PandasDataFrame", "Text"]
