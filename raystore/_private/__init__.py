"""raystore's internals, in layers (docs/architecture.md): nothing here is public API."""
