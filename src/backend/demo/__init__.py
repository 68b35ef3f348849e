"""The demo and its stand-ins for ENA and DigitalOcean (also the tests' servers)."""
