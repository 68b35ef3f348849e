"""Talking to ENA: the portal client, the taxon check (`fetch_accession_links`), selection of
runs worth having (`parse_fetched_data`), run metadata, and taxonomy names."""
