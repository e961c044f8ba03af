"""Runners: how a stored model runs, in-process or as Ray Serve deployments, on CPUs or GPUs."""
