"""Turning services into running Serve applications: `raystore serve` on a local Ray (`local`),
Serve configs with pinned models (`build`), and a running cluster's Serve REST API (`cluster`)."""
