"""Client login and access rules: who a request comes from, and whether it may have what it asks.

`htpasswd` reads the user file, `logins` checks Basic credentials against it, `access` decides
from the `[[access]]` rules; the middleware in `mirror.api.auth` puts them in front of `/v2/`.
"""
