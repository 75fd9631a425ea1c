"""Message templates: `templates/<event>/<channel>[.<locale>].yaml`, compiled once per policy
version (`catalog`), rendered in a Jinja2 sandbox (`render`), measured against the channels'
limits (`limits`) and checked with their examples by `notigate check` (`check`)."""
