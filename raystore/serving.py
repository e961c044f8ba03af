"""Public `raystore.serving`: the Serve application builder that configs written by `raystore build`
name (`import_path: raystore.serving:build_application`). A public path, so that a built config
keeps deploying with later raystore versions."""

from raystore._private.deploy.build import build_application

__all__ = ["build_application"]
