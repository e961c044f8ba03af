"""HTTP errors of the service layer: each carries its status code and a message for the caller."""

from __future__ import annotations

from raystore.exceptions import RaystoreError


class HTTPError(RaystoreError):
    status_code = 500

    def __init__(self, message: str, *, status_code: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code
        self.headers = dict(headers or {})


class BadInput(HTTPError):
    """The request body does not parse or does not match the API's input descriptor."""

    status_code = 400


class PayloadTooLarge(HTTPError):
    status_code = 413


class UnsupportedMediaType(HTTPError):
    status_code = 415
