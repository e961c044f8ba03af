"""Public `raystore.io`: the IO descriptors of service APIs."""

from raystore.service.io import JSON, File, IODescriptor, NumpyNdarray, Text

__all__ = ["File", "IODescriptor", "JSON", "NumpyNdarray", "Text"]
