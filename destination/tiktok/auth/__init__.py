"""Connecting to TikTok: the OAuth login, the token store, and which token a run uses.

- ``store.py``     the token file (private, atomic, one entry per app id)
- ``oauth.py``     TikTok's OAuth dialect on authlib's client, over a ``Backend``
- ``callback.py``  the one-shot loopback server that receives the consent redirect
- ``login.py``     the whole login: consent URL, redirect, code exchange, store
- ``provider.py``  the token a sync uses (environment, else store), refresh, scope check
- ``commands.py``  ``auth login | status | logout | revoke``
"""
