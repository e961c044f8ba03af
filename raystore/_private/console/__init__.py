"""The web console (`raystore ui`): a store's models, versions and files in a browser.

- `catalog`: the store as the console reads it, each version's summary cached (pure, no HTTP);
- `compare`: versions side by side, differences marked;
- `app`: the Starlette app, its Jinja2 templates (`templates/`) and stylesheet (`static/`), all
  inside the package: no CDN, no build step.

It sits with `service` at layer 4, below it: a service may mount the console.
"""
