"""`raystore perf`: throughput and latency of a served API at several loads, measured until steady.

- `command`: from the CLI's options to the report (what is measured, the sweep or `--tune`);
- `levels`: the loads to sweep (`1,4,16` or `1:256:x2`);
- `windows`: one measuring window's numbers, when windows agree (steady), the knee (pure);
- `load`, `http1`: the load generator, in a process of its own (closed and open loop);
- `sweep`: the target probed, then each level measured; `service_stats`: a raystore service's
  batch statistics per level;
- `inputs`: request bodies from files, with their content types; `v2`: a V2 model's URL and
  request bodies made from arrays;
- `target`: a `MODULE:svc` service started for the sweep (tunable with `--tune`);
- `tune`: `--tune`'s grid, and the setting to recommend;
- `report`, `plot`: the table, CSV, JSON and PNG.
"""
