"""A service with two APIs and no model, for `raystore perf MODULE:svc` (imported by the test and
by its replica)."""

import raystore
from raystore.io import Text

svc = raystore.Service("perf_target")


@svc.api(input=Text(), output=Text(), route="/loud")
def shout(text: str) -> str:
    return text.upper()


@svc.api(input=Text(), output=Text())
def whisper(text: str) -> str:
    return text.lower()
