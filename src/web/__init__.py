"""microfetch's web app: worker callbacks, dashboard, JSON API, health and metrics."""
