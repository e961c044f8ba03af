"""`raystore perf`: throughput and latency of a served API at several loads, measured until steady.

- `levels`: the loads to sweep (`1,4,16` or `1:256:x2`);
- `windows`: one measuring window's numbers, when windows agree (steady), the knee (pure);
- `load`: the load generator, in a process of its own (aiohttp, closed loop);
- `inputs`: request bodies from files, with their content types;
- `report`: the table, CSV and JSON.
"""
