"""Public `raystore.io`: the IO descriptors of service APIs."""

from raystore.service.io import JSON, File, Image, IODescriptor, Multipart, NumpyNdarray, PandasDataFrame, Text

__all__ = ["File", "IODescriptor", "Image", "JSON", "Multipart", "NumpyNdarray", "PandasDataFrame", "Text"]
