"""The lab of the collection tests, reused with the digitalocean backend."""

from tests.collect.conftest import lab  # noqa: F401 - the lab fixture
