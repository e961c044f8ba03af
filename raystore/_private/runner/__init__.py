"""Runners: how a stored model runs, in-process or as Ray Serve deployments, on CPUs or GPUs.

- `runnable`: `Runnable`, what runs, and `@Runnable.method`;
- `spec`: `RunnerSpec`, a runner's settings checked once and frozen;
- `runner`: `Runner` = a spec plus one backend; `local` (in this process, or embedded in the
  calling replica) and `served` (the runner's own Serve deployments, through handles);
- `resources`, `gpus`, `transport`: replica resources, the machine's GPUs, values between replicas;
- `model`: `raystore.Model`, a stored model with `to_runner`.
"""
