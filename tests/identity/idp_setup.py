"""Seed the test identity provider: ``python -m tests.identity.idp_setup <json>``.

The JSON argument: ``{"users": [{"username", "password", "groups": [..]}],
"clients": [{"id", "name", "secret", "redirect_uris": [..], "grant_types": [..],
"scopes": [..]}]}``. Run with ``DJANGO_SETTINGS_MODULE=tests.identity.idp_settings``.
"""

from __future__ import annotations

import json
import sys

import django


def main(spec: dict) -> None:
    django.setup()
    from allauth.idp.oidc.models import Client
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group, User

    for u in spec.get("users", []):
        user, _ = User.objects.get_or_create(username=u["username"])
        if not user.check_password(u["password"]):
            # Only when it changes: a new password hash ends the user's IdP sessions.
            user.set_password(u["password"])
            user.save()
        user.groups.set([Group.objects.get_or_create(name=g)[0] for g in u.get("groups", [])])
    for c in spec.get("clients", []):
        client = Client(id=c["id"], name=c["name"], secret=make_password(c["secret"]))
        client.set_redirect_uris(c.get("redirect_uris", []))
        client.grant_types = "\n".join(c.get("grant_types", ["authorization_code"]))
        client.set_scopes(c.get("scopes", ["openid", "profile", "email"]))
        client.skip_consent = True
        client.save()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
