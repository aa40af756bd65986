"""Tests of the pure core (engine.core): tests/unit/test_layers.py runs them again with git, kubernetes, urllib3,
flask and gunicorn made unimportable, so that the core and its tests are known to need none of them."""
